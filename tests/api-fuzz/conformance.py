"""Real answers of a populated server (`serve --demo`) checked against the server's own OpenAPI
schemas, formats included (`date-time`, `uuid`). schemathesis (run.sh) sees mostly empty lists,
404s for random ids and, as the office, 401s once it has rotated the office's own token; this
reads reports with rows, visits with events, timelines, figures and alerts.

Usage: conformance.py BASE_URL OFFICE_TOKEN (with the schemathesis venv's python: jsonschema_rs).
"""
import json, sys, urllib.request, datetime
import jsonschema_rs

base, token = sys.argv[1], sys.argv[2]
def get(path):
    req = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req) as r:
        return r.status, r.headers.get("content-type"), r.read()

_, _, raw = get("/api/openapi.json")
doc = json.loads(raw)
ops = {}
for path, item in doc["paths"].items():
    for method, op in item.items():
        if method == "get":
            ops[path] = op["responses"]["200"]["content"]

def check(template, path):
    status, ctype, body = get(path)
    content = ops[template]
    if "application/json" not in content:
        return 0
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "components": doc["components"]}
    schema.update(content["application/json"]["schema"])
    v = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
    value = json.loads(body)
    errors = list(v.iter_errors(value))
    for e in errors[:5]:
        print("FAIL", path, e.message[:300], list(e.instance_path)[:8])
    n = len(body)
    print(("ok  " if not errors else "BAD "), path, f"{n} bytes")
    return len(errors)

today = datetime.date.today()
frm = (today - datetime.timedelta(days=10)).isoformat()
to = (today + datetime.timedelta(days=2)).isoformat()
w = f"from={frm}&to={to}"
bad = 0
for g in ["all", "contract", "commissioning_model", "commissioner", "carer", "client", "team"]:
    bad += check("/api/v1/reports/punctuality", f"/api/v1/reports/punctuality?{w}&group_by={g}&period=week")
for r in ["kpi", "reconciliation", "continuity"]:
    bad += check(f"/api/v1/reports/{r}", f"/api/v1/reports/{r}?{w}")
for p in ["/api/v1/alerts", "/api/v1/devices", "/api/v1/people", "/api/v1/oversight/escalations",
          "/api/v1/oversight/commissioner-contacts", "/api/v1/oversight/kpi-projection"]:
    bad += check(p, p)
bad += check("/api/v1/oversight/alerts", f"/api/v1/oversight/alerts?state=all&from={frm}")
bad += check("/api/v1/oversight/figures", f"/api/v1/oversight/figures?{w}")
_, _, alerts = get(f"/api/v1/oversight/alerts?state=all&from={frm}")
for a in json.loads(alerts)[:5]:
    bad += check("/api/v1/oversight/alerts/{id}", f"/api/v1/oversight/alerts/{a['alert_id']}")
_, _, people = get("/api/v1/people")
carers = [p["id"] for p in json.loads(people) if p["role"] == "carer"][:3]
for c in carers:
    for d in range(0, 3):
        day = (today - datetime.timedelta(days=d)).isoformat()
        bad += check("/api/v1/carers/{id}/timeline", f"/api/v1/carers/{c}/timeline?date={day}")
_, _, day = get(f"/api/v1/carers/{carers[0]}/timeline?date={(today - datetime.timedelta(days=1)).isoformat()}")
for v in json.loads(day)["visits"][:6]:
    vid = v["visit_id"]
    for t in ["/api/v1/visits/{id}", "/api/v1/visits/{id}/timeline", "/api/v1/visits/{id}/figures"]:
        bad += check(t, t.replace("{id}", vid))
print("schema errors:", bad)
sys.exit(1 if bad else 0)
