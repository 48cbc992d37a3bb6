"""A carer's day through the real bindings (caresync_ffi) against a real server process.

Run by tests/ffi/run.sh, which builds the server and the library and generates the bindings.
Environment: CARESYNC_SERVER (server binary), CARESYNC_BINDINGS (folder with caresync_ffi.py
and libcaresync_ffi.so).
"""

import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.environ["CARESYNC_BINDINGS"])
import caresync_ffi as cs  # noqa: E402

SERVER = os.environ["CARESYNC_SERVER"]


class Server:
    """caresync-server serve on 127.0.0.1, restartable on the same port and data directory."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        out = subprocess.run([SERVER, "bootstrap", "--data-dir", data_dir], capture_output=True, text=True, check=True)
        self.token = next(l.split(": ", 1)[1] for l in out.stdout.splitlines() if l.startswith("office token: "))
        self.addr = "127.0.0.1:0"
        self.proc = None
        self.start()

    def start(self):
        for _ in range(50):
            self.proc = subprocess.Popen(
                [SERVER, "serve", "--listen", self.addr, "--data-dir", self.data_dir],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env={**os.environ, "CARESYNC_LOG": "warn"},
            )
            line = self.proc.stdout.readline()
            if line.startswith("listening on "):
                self.url = line.strip().split(" ", 2)[2]
                self.addr = self.url.removeprefix("http://")
                return
            self.proc.wait()
            self.proc.stdout.close()
            time.sleep(0.1)  # the port may still be held by the previous process
        raise RuntimeError("server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read().decode()
                return resp.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read().decode() or "null")


def rfc3339(t):
    return t.astimezone(dt.timezone.utc).isoformat()


class CarerDay(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="caresync-py-")
        self.server = Server(os.path.join(self.dir, "server"))
        s = self.server
        _, client = s.call("POST", "/api/v1/clients", {"name": "Mrs K"})
        _, contract = s.call("POST", "/api/v1/contracts", {"name": "Spot", "commissioner": "Council", "model": "spot"})
        _, person = s.call("POST", "/api/v1/people", {"name": "Ann", "role": "carer"})
        self.carer = person["person"]["id"]
        _, code = s.call("POST", "/api/v1/people/%s/enrolment-codes" % self.carer)
        self.code = code["code"]
        self.start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=5)
        self.client_id, self.contract_id = client["id"], contract["id"]
        self.visit = self.create_visit(self.start)
        self.phone = cs.CarerPhone.open(os.path.join(self.dir, "phone.db"))

    def create_visit(self, start):
        status, created = self.server.call("POST", "/api/v1/visits", {"visits": [{
            "client_id": self.client_id, "contract_id": self.contract_id, "carers": [self.carer],
            "planned_start": rfc3339(start), "planned_end": rfc3339(start + dt.timedelta(minutes=30)),
            "tasks": ["Breakfast"],
        }]})
        self.assertEqual(status, 201, created)
        return created["visit_ids"][0]

    def tearDown(self):
        if self.server.proc.poll() is None:
            self.server.stop()
        # The server's data directory and the phone's database go with the test.
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_a_day_offline_then_synced(self):
        carer = self.phone.enrol(self.server.url, self.code, "Ann's phone")
        self.assertEqual(carer, self.carer)
        report = self.phone.sync_now()
        self.assertEqual(report.errors, [])
        self.assertEqual(report.visits_received, 1)
        detail = self.phone.visit(self.visit)
        self.assertEqual(detail.state, cs.CarerVisitState.UPCOMING)

        self.server.stop()  # no signal from here on
        loc = cs.GeoPoint(lat=51.5, lon=-0.12, accuracy_m=9.0)
        ev = self.phone.clock_in(self.visit, cs.ClockMethod.NFC, loc, None, "NFC-1001")
        self.assertEqual(ev.kind, cs.ClockKind.CLOCK_IN)
        self.phone.add_note(self.visit, cs.NoteCategory.WELLBEING, "Cheerful; ate all of breakfast.")
        task = self.phone.visit(self.visit).tasks[0]
        self.phone.record_task_outcome(self.visit, task.task_id, cs.TaskResult.DONE, None)
        self.phone.clock_out(self.visit, cs.ClockMethod.APP, None, None, None)
        self.assertEqual(self.phone.pending_count(), 4)
        with self.assertRaises(cs.PhoneError.Offline):
            self.phone.sync_now()
        self.assertEqual(self.phone.visit(self.visit).state, cs.CarerVisitState.DONE)

        self.server.start()  # same port, same data
        report = self.phone.sync_now()
        self.assertEqual(report.errors, [])
        self.assertEqual(report.pending_after, 0)
        self.assertIsNotNone(self.phone.last_sync_at_ms())

        status, view = self.server.call("GET", "/api/v1/visits/" + self.visit)
        self.assertEqual(status, 200)
        kinds = sorted(e["kind"] for e in view["events"])
        self.assertEqual(kinds, ["clock_in", "clock_out"])
        self.assertEqual(view["visit"]["notes"][0]["text"], "Cheerful; ate all of breakfast.")
        day = self.start.astimezone(dt.timezone.utc).date()
        q = "from=%s&to=%s&group_by=all&period=day" % (day - dt.timedelta(days=1), day + dt.timedelta(days=2))
        status, report = self.server.call("GET", "/api/v1/reports/punctuality?" + q)
        self.assertEqual(status, 200, report)
        on_time = sum(r["on_time"] for r in report["rows"])
        late = sum(r["late"] for r in report["rows"])
        # Clocked in about five minutes after the planned start: on time (late is > 15 minutes).
        self.assertEqual((on_time, late), (1, 0), report)

    def test_a_long_note_reaches_a_second_phone(self):
        # Issue 11: a message over 4 KiB used to stop the phone syncing at all.
        self.phone.enrol(self.server.url, self.code, "Ann's phone")
        self.assertEqual(self.phone.sync_now().errors, [])
        self.phone.clock_in(self.visit, cs.ClockMethod.APP, None, None, None)
        # Varied text (not one repeated letter) so the message really is about 9 KB or more.
        words = ["breakfast", "tablets", "sleepy", "daughter", "rang", "kettle", "walked", "garden"]
        text = " ".join(words[(i * 7 + i // 3) % len(words)] for i in range(2000))[:9000]
        self.assertEqual(len(text), 9000)
        self.phone.add_note(self.visit, cs.NoteCategory.HANDOVER, text)
        self.phone.clock_out(self.visit, cs.ClockMethod.APP, None, None, None)
        report = self.phone.sync_now()
        self.assertEqual(report.errors, [])
        self.assertEqual(report.pending_after, 0)
        status, view = self.server.call("GET", "/api/v1/visits/" + self.visit)
        self.assertEqual(status, 200)
        self.assertEqual([n["text"] for n in view["visit"]["notes"]], [text])

        # A second phone for the same carer (a fresh enrolment) pulls the visit, note and all.
        _, code = self.server.call("POST", "/api/v1/people/%s/enrolment-codes" % self.carer)
        second = cs.CarerPhone.open(os.path.join(self.dir, "second.db"))
        second.enrol(self.server.url, code["code"], "Ann's new phone")
        report = second.sync_now()
        self.assertEqual(report.errors, [])
        self.assertEqual(report.visits_received, 1)
        detail = second.visit(self.visit)
        self.assertEqual([n.text for n in detail.notes], [text])
        self.assertEqual(detail.state, cs.CarerVisitState.DONE)

    def test_refused_changes_are_kept_listed_and_not_resent(self):
        # Issue 11: changes refused for a visit stay on the phone, listed with the reason, and are
        # not sent again until the app asks. Here the visit's message is over the 1 MiB limit
        # (30 notes of 10,000 four-byte characters), refused before it leaves the phone.
        self.phone.enrol(self.server.url, self.code, "Ann's phone")
        big = self.create_visit(self.start + dt.timedelta(hours=1))
        self.assertEqual(self.phone.sync_now().errors, [])
        rnd = random.Random(11)
        for _ in range(30):
            text = "".join(chr(0x20000 + rnd.randrange(0xA000)) for _ in range(10000))
            self.phone.add_note(big, cs.NoteCategory.GENERAL, text)
        self.phone.clock_in(self.visit, cs.ClockMethod.APP, None, None, None)
        report = self.phone.sync_now()
        self.assertEqual([(e.visit_id, e.code) for e in report.errors], [(big, "message_too_large")])
        self.assertEqual((report.pending_after, report.refused_after), (0, 1))

        refused = self.phone.refused_changes()
        self.assertEqual([(r.visit_id, r.code, r.changes) for r in refused], [(big, "message_too_large", 30)])
        self.assertIn("exceeds", refused[0].message)
        self.assertLess(abs(refused[0].refused_at_ms - time.time() * 1000), 60_000)
        self.assertEqual(self.phone.pending_count(), 0)
        self.assertEqual(len(self.phone.visit(big).notes), 30, "kept on the phone")
        status, view = self.server.call("GET", "/api/v1/visits/" + self.visit)
        self.assertEqual(len(view["events"]), 1, "the other visit's clock-in went through")

        again = self.phone.sync_now()
        self.assertEqual(again.errors, [], "not tried again")
        self.assertEqual(again.visits_sent, 0)
        status, view = self.server.call("GET", "/api/v1/visits/" + big)
        self.assertEqual(view["visit"]["notes"], [])

        self.assertTrue(self.phone.retry_refused(big))
        self.assertEqual(self.phone.refused_changes(), [])
        self.assertEqual(self.phone.pending_count(), 30)
        report = self.phone.sync_now()
        self.assertEqual([(e.visit_id, e.code) for e in report.errors], [(big, "message_too_large")])
        self.assertEqual(len(self.phone.refused_changes()), 1)

    def test_error_paths(self):
        with self.assertRaises(cs.PhoneError.Unauthorized):
            self.phone.enrol(self.server.url, "WRONG-CODE0", "phone")
        with self.assertRaises(cs.PhoneError.NotEnrolled):
            self.phone.sync_now()
        self.phone.enrol(self.server.url, self.code, "phone")
        self.phone.sync_now()
        with self.assertRaises(cs.PhoneError.InvalidInput):
            self.phone.clock_out(self.visit, cs.ClockMethod.APP, None, None, None)
        with self.assertRaises(cs.PhoneError.InvalidInput):
            self.phone.clock_in(self.visit, cs.ClockMethod.MANUAL, None, None, None)
        with self.assertRaises(cs.PhoneError.NotFound):
            self.phone.visit("00000000-0000-4000-8000-000000000000")
        status, _ = self.server.call("POST", "/api/v1/devices/%s/revoke" % self.phone.device_id())
        self.assertEqual(status, 204)
        self.phone.clock_in(self.visit, cs.ClockMethod.APP, None, None, None)
        with self.assertRaises(cs.PhoneError.Unauthorized):
            self.phone.sync_now()
        self.assertEqual(self.phone.pending_count(), 1, "the clock-in is kept on the phone")


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
