// A carer's day through the real bindings (uniffi.caresync_ffi) against a real server process.
// Run by tests/ffi/run.sh. Environment: CARESYNC_SERVER (server binary); the JVM finds the
// library through -Djna.library.path.

import uniffi.caresync_ffi.*
import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.file.Files
import java.time.Instant
import java.time.temporal.ChronoUnit
import kotlin.system.exitProcess

val SERVER: String = System.getenv("CARESYNC_SERVER") ?: error("CARESYNC_SERVER is not set")

class Server(private val dataDir: String) {
    val token: String
    private var addr = "127.0.0.1:0"
    private var proc: Process? = null
    lateinit var url: String
    private val http = HttpClient.newHttpClient()

    init {
        val out = ProcessBuilder(SERVER, "bootstrap", "--data-dir", dataDir).start()
        val text = out.inputStream.bufferedReader().readText()
        check(out.waitFor() == 0) { "bootstrap failed" }
        token = text.lines().first { it.startsWith("office token: ") }.removePrefix("office token: ").trim()
        start()
    }

    fun start() {
        repeat(50) {
            val pb = ProcessBuilder(SERVER, "serve", "--listen", addr, "--data-dir", dataDir)
            pb.environment()["CARESYNC_LOG"] = "warn"
            pb.redirectError(ProcessBuilder.Redirect.DISCARD)
            val p = pb.start()
            val line = BufferedReader(InputStreamReader(p.inputStream)).readLine() ?: ""
            if (line.startsWith("listening on ")) {
                proc = p
                url = line.removePrefix("listening on ").trim()
                addr = url.removePrefix("http://")
                return
            }
            p.waitFor()
            Thread.sleep(100) // the port may still be held by the previous process
        }
        error("server did not start")
    }

    fun stop() {
        proc?.let { it.destroy(); it.waitFor() }
        proc = null
    }

    /** Returns status and body text. */
    fun call(method: String, path: String, json: String? = null): Pair<Int, String> {
        val b = HttpRequest.newBuilder(URI.create(url + path)).header("Authorization", "Bearer $token")
        val req = when {
            json != null -> b.header("Content-Type", "application/json").method(method, HttpRequest.BodyPublishers.ofString(json))
            else -> b.method(method, HttpRequest.BodyPublishers.noBody())
        }.build()
        val resp = http.send(req, HttpResponse.BodyHandlers.ofString())
        return resp.statusCode() to resp.body()
    }
}

/** The value of a top-level or nested string field, e.g. field(body, "id") — enough for these answers. */
fun field(json: String, name: String): String =
    Regex("\"$name\"\\s*:\\s*\"([^\"]*)\"").find(json)?.groupValues?.get(1) ?: error("no $name in $json")

fun sumOf(json: String, name: String): Int =
    Regex("\"$name\"\\s*:\\s*(\\d+)").findAll(json).sumOf { it.groupValues[1].toInt() }

var passed = 0
var failed = 0

fun check(name: String, body: () -> Unit) {
    try {
        body()
        passed++
        println("ok   $name")
    } catch (e: Throwable) {
        failed++
        println("FAIL $name: $e")
        e.printStackTrace()
    }
}

fun assertEq(expected: Any?, actual: Any?, what: String) {
    if (expected != actual) throw AssertionError("$what: expected $expected, got $actual")
}

inline fun <reified T : Throwable> assertThrows(what: String, block: () -> Unit) {
    try {
        block()
    } catch (e: Throwable) {
        if (e is T) return
        throw AssertionError("$what: expected ${T::class.simpleName}, got $e")
    }
    throw AssertionError("$what: expected ${T::class.simpleName}, nothing thrown")
}

class Scene {
    val dir: File = Files.createTempDirectory("caresync-kt-").toFile()
    val server = Server(File(dir, "server").path)
    val carer: String
    val code: String
    val visit: String
    val start: Instant = Instant.now().truncatedTo(ChronoUnit.SECONDS).minus(5, ChronoUnit.MINUTES)
    val phone: CarerPhone = CarerPhone.open(File(dir, "phone.db").path)
    private val clientId: String
    private val contractId: String

    init {
        val client = field(server.call("POST", "/api/v1/clients", """{"name":"Mrs K"}""").second, "id")
        val contract = field(server.call("POST", "/api/v1/contracts", """{"name":"Spot","commissioner":"Council","model":"spot"}""").second, "id")
        carer = field(server.call("POST", "/api/v1/people", """{"name":"Ann","role":"carer"}""").second, "id")
        code = field(server.call("POST", "/api/v1/people/$carer/enrolment-codes").second, "code")
        val end = start.plus(30, ChronoUnit.MINUTES)
        val (status, body) = server.call(
            "POST", "/api/v1/visits",
            """{"visits":[{"client_id":"$client","contract_id":"$contract","carers":["$carer"],"planned_start":"$start","planned_end":"$end","tasks":["Breakfast"]}]}""",
        )
        assertEq(201, status, "create visit: $body")
        visit = Regex("\"visit_ids\"\\s*:\\s*\\[\"([^\"]+)\"").find(body)!!.groupValues[1]
        clientId = client
        contractId = contract
    }

    fun createVisit(at: Instant): String {
        val end = at.plus(30, ChronoUnit.MINUTES)
        val (status, body) = server.call(
            "POST", "/api/v1/visits",
            """{"visits":[{"client_id":"$clientId","contract_id":"$contractId","carers":["$carer"],"planned_start":"$at","planned_end":"$end","tasks":["Breakfast"]}]}""",
        )
        assertEq(201, status, "create visit: $body")
        return Regex("\"visit_ids\"\\s*:\\s*\\[\"([^\"]+)\"").find(body)!!.groupValues[1]
    }
}

fun main() {
    check("a carer's day offline, then synced") {
        val s = Scene()
        try {
            assertEq(s.carer, s.phone.enrol(s.server.url, s.code, "Ann's phone"), "carer id")
            val first = s.phone.syncNow()
            assertEq(0, first.errors.size, "sync errors")
            assertEq(1u, first.visitsReceived, "visits received")
            assertEq(CarerVisitState.UPCOMING, s.phone.visit(s.visit).state, "state")

            s.server.stop() // no signal from here on
            val ev = s.phone.clockIn(s.visit, ClockMethod.NFC, GeoPoint(51.5, -0.12, 9.0), null, "NFC-1001")
            assertEq(ClockKind.CLOCK_IN, ev.kind, "event kind")
            s.phone.addNote(s.visit, NoteCategory.WELLBEING, "Cheerful; ate all of breakfast.")
            val task = s.phone.visit(s.visit).tasks[0]
            s.phone.recordTaskOutcome(s.visit, task.taskId, TaskResult.DONE, null)
            s.phone.clockOut(s.visit, ClockMethod.APP, null, null, null)
            assertEq(4u, s.phone.pendingCount(), "pending while offline")
            assertThrows<PhoneException.Offline>("sync offline") { s.phone.syncNow() }

            s.server.start() // same port, same data
            val report = s.phone.syncNow()
            assertEq(0, report.errors.size, "sync errors")
            assertEq(0u, report.pendingAfter, "pending after")

            val (status, view) = s.server.call("GET", "/api/v1/visits/${s.visit}")
            assertEq(200, status, "visit view")
            assertEq(true, view.contains("\"kind\":\"clock_in\"") && view.contains("\"kind\":\"clock_out\""), "events on the server: $view")
            val day = s.start.atZone(java.time.ZoneOffset.UTC).toLocalDate()
            val (rs, rep) = s.server.call("GET", "/api/v1/reports/punctuality?from=${day.minusDays(1)}&to=${day.plusDays(2)}&group_by=all&period=day")
            assertEq(200, rs, "report")
            // Clocked in about five minutes after the planned start: on time (late is > 15 minutes).
            assertEq(1, sumOf(rep, "on_time"), "on time: $rep")
            assertEq(0, sumOf(rep, "late"), "late")
        } finally {
            s.server.stop()
            s.dir.deleteRecursively()
        }
    }
    check("error paths") {
        val s = Scene()
        try {
            assertThrows<PhoneException.Unauthorized>("wrong code") { s.phone.enrol(s.server.url, "WRONG-CODE0", "phone") }
            s.phone.enrol(s.server.url, s.code, "phone")
            s.phone.syncNow()
            assertThrows<PhoneException.InvalidInput>("clock-out before clock-in") {
                s.phone.clockOut(s.visit, ClockMethod.APP, null, null, null)
            }
            val (status, _) = s.server.call("POST", "/api/v1/devices/${s.phone.deviceId()}/revoke")
            assertEq(204, status, "revoke")
            s.phone.clockIn(s.visit, ClockMethod.APP, null, null, null)
            assertThrows<PhoneException.Unauthorized>("revoked device") { s.phone.syncNow() }
            assertEq(1u, s.phone.pendingCount(), "the clock-in is kept on the phone")
        } finally {
            s.server.stop()
            s.dir.deleteRecursively()
        }
    }
    check("refused changes are kept, listed and not sent again") {
        val s = Scene()
        try {
            s.phone.enrol(s.server.url, s.code, "Ann's phone")
            val big = s.createVisit(s.start.plus(1, ChronoUnit.HOURS))
            assertEq(0, s.phone.syncNow().errors.size, "first sync")
            // Over the 1 MiB message limit: 30 notes of 10,000 four-byte characters.
            val rnd = java.util.Random(11)
            repeat(30) {
                val text = buildString { repeat(10_000) { appendCodePoint(0x20000 + rnd.nextInt(0xA000)) } }
                s.phone.addNote(big, NoteCategory.GENERAL, text)
            }
            s.phone.clockIn(s.visit, ClockMethod.APP, null, null, null)
            val report = s.phone.syncNow()
            assertEq(listOf(big to "message_too_large"), report.errors.map { it.visitId to it.code }, "errors")
            assertEq(0u, report.pendingAfter, "pending after")
            assertEq(1u, report.refusedAfter, "refused after")
            val refused = s.phone.refusedChanges()
            assertEq(listOf(Triple(big, "message_too_large", 30u)), refused.map { Triple(it.visitId, it.code, it.changes) }, "refused")
            assertEq(30, s.phone.visit(big).notes.size, "kept on the phone")
            assertEq(0u, s.phone.pendingCount(), "not pending")
            val again = s.phone.syncNow()
            assertEq(0, again.errors.size, "not tried again")
            assertEq(0u, again.visitsSent, "nothing sent")
            assertEq(true, s.phone.retryRefused(big), "retry")
            assertEq(30u, s.phone.pendingCount(), "pending again")
        } finally {
            s.server.stop()
            s.dir.deleteRecursively()
        }
    }
    println("$passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
