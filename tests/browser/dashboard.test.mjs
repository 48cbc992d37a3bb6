// The dashboard as a supervisor and the office use it, in a real headless Chromium: sign in,
// today's board, a visit, an amendment that shows on the timeline, the punctuality chart switched
// to spot against framework, the CSV download, sign out. Screenshots go to $SCREENSHOTS.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import assert from "node:assert/strict";

const url = process.env.DASHBOARD_URL;
const officeToken = process.env.OFFICE_TOKEN;
const supervisorToken = process.env.SUPERVISOR_TOKEN;
const supervisorTeam = process.env.SUPERVISOR_TEAM;
const shots = process.env.SCREENSHOTS;
assert.ok(url && officeToken && supervisorToken && shots, "DASHBOARD_URL, OFFICE_TOKEN, SUPERVISOR_TOKEN, SCREENSHOTS");
fs.mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--lang=en-GB",
  ],
});
const shot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
let step = "start";
const log = (s) => { step = s; console.log(`browser: ${s}`); };

async function signIn(context, token) {
  const page = await context.newPage();
  page.on("pageerror", (e) => { throw new Error(`script error on ${page.url()}: ${e.message}`); });
  await page.goto(`${url}/signin#token=${token}`);
  // The page's script moved the token from the link into the form and out of the address bar.
  assert.equal(await page.inputValue("#token"), token);
  assert.ok(!page.url().includes(token), "the token does not stay in the address bar");
  await shot(page, "signin");
  await page.click("button[type=submit]");
  await page.waitForURL(`${url}/`);
  return page;
}

try {
  // ---- a supervisor's morning -------------------------------------------------------------
  log("supervisor signs in and sees today's board");
  const sup = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true, locale: "en-GB", timezoneId: "Europe/London" });
  let page = await signIn(sup, supervisorToken);
  await page.waitForSelector("h1");
  assert.match(await page.textContent("h1"), /Today/);
  assert.ok(await page.isVisible("text=Sign out"));
  const rows = await page.locator("table.board tbody tr").count();
  assert.ok(rows > 0, "the demo's team has visits today");
  if (supervisorTeam) {
    // Only their own team's visits: every carer cell names their team.
    const teams = await page.locator("table.board tbody td:nth-child(3) small").allTextContents();
    assert.ok(teams.length > 0 && teams.every((t) => t === supervisorTeam), `only ${supervisorTeam}: ${[...new Set(teams)]}`);
  }
  assert.equal(await page.locator("text=/[0-9a-f]{8}-[0-9a-f]{4}-/").count(), 0, "no ids on the page");
  await shot(page, "today-supervisor");

  log("a filter survives the live refresh");
  const state = page.locator("select[name=state]");
  await state.selectOption("done");
  await page.waitForURL(/state=done/);
  assert.equal(await page.locator("select[name=state]").inputValue(), "done");

  log("supervisor opens a visit");
  await page.goto(`${url}/`);
  const done = page.locator("table.board tbody tr.st-done a").first();
  const link = (await done.count()) > 0 ? done : page.locator("table.board tbody tr a").first();
  await link.click();
  await page.waitForURL(/\/visits\//);
  await page.waitForSelector("#timeline");
  await shot(page, "visit");

  log("supervisor adds an amendment and sees it on the timeline");
  await page.selectOption("select[name=time]", "clock_in");
  await page.selectOption("select[name=reason]", "no_signal_at_door");
  await page.fill("input[name=comment]", "Carer rang from the door: no signal");
  await page.click("text=Add correction");
  await page.waitForURL(/\/visits\/.*#timeline/);
  const amendment = page.locator("ol.timeline li.ev-amendment").last();
  assert.match(await amendment.textContent(), /corrected to/);
  assert.match(await amendment.textContent(), /No signal at door/);
  assert.match(await amendment.textContent(), /Carer rang from the door: no signal/);
  await amendment.scrollIntoViewIfNeeded();
  await shot(page, "visit-amended");

  log("supervisor opens the carer's day");
  await page.locator("section.card dl a").first().click();
  await page.waitForURL(/\/carers\//);
  assert.ok((await page.locator(".dayline .block").count()) > 0, "the day's visits on the line");
  await shot(page, "carer-day");

  log("supervisor opens Alerts: their team's open alerts, named, or an empty state that says so");
  await page.click("nav >> text=Alerts");
  await page.waitForURL(/\/alerts/);
  assert.match(await page.textContent("h1"), /Alerts/);
  const records = await page.locator("li.record").count();
  if (records === 0) {
    assert.ok(await page.isVisible("text=No open alerts for your team"));
  } else if (supervisorTeam) {
    const teams = await page.locator("li.record .what small").allTextContents();
    assert.ok(teams.every((t) => t === supervisorTeam), `only ${supervisorTeam}: ${[...new Set(teams)]}`);
  }
  assert.equal(await page.locator("text=/[0-9a-f]{8}-[0-9a-f]{4}-/").count(), 0, "no ids on the page");
  await shot(page, "alerts-supervisor");

  log("a supervisor cannot open the office's figures, nor another team's visit");
  const denied = await page.goto(`${url}/punctuality`);
  assert.equal(denied.status(), 403);
  await shot(page, "refused");
  const unknown = await page.goto(`${url}/visits/00000000-0000-4000-8000-000000000000`);
  assert.equal(unknown.status(), 404);

  log("tablet width");
  const tablet = await browser.newContext({ viewport: { width: 820, height: 1180 }, locale: "en-GB", timezoneId: "Europe/London" });
  const tpage = await signIn(tablet, supervisorToken);
  await shot(tpage, "today-tablet");
  await tablet.close();

  log("supervisor signs out");
  await page.goto(`${url}/`);
  await page.click("text=Sign out");
  await page.waitForURL(`${url}/signin`);
  const again = await page.goto(`${url}/`);
  assert.equal(new URL(page.url()).pathname, "/signin", "signed out for good");
  assert.ok(again.ok());
  await sup.close();

  // ---- the office's figures ---------------------------------------------------------------
  log("office opens punctuality");
  const office = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true, locale: "en-GB", timezoneId: "Europe/London" });
  page = await signIn(office, officeToken);
  await shot(page, "today-office");
  await page.click("nav >> text=Punctuality");
  await page.waitForURL(/\/punctuality/);
  assert.ok((await page.locator("figure svg").count()) >= 1, "a chart");
  await shot(page, "punctuality-kpi");

  log("office switches the chart to spot against framework");
  await page.click("text=Spot against framework");
  await page.waitForURL(/chart=models/);
  const legend = await page.locator("figure svg").first().textContent();
  assert.match(legend, /Spot/);
  assert.match(legend, /Framework/);
  await shot(page, "punctuality-models");

  log("office downloads the CSV of the table");
  await page.selectOption("select[name=group]", "commissioning_model");
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/group=commissioning_model/);
  const tableRows = await page.locator("table.figures tbody tr").count();
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("text=Download CSV")]);
  const file = await download.path();
  const csv = fs.readFileSync(file, "utf8").replace(/^\uFEFF/, "").trim().split(/\r?\n/);
  assert.equal(csv[0], "period,group,group_id,visits,attended,on_time_pct,late_pct,missed_pct,short_pct,electronic_pct");
  assert.equal(csv.length - 1, tableRows, "the CSV has exactly the table's rows");
  const firstCells = await page.locator("table.figures tbody tr").first().locator("td").allTextContents();
  assert.ok(csv[1].startsWith(`${firstCells[0]},${firstCells[1]},`), `${csv[1]} vs ${firstCells}`);
  fs.copyFileSync(file, path.join(shots, "punctuality.csv"));

  for (const [tab, name] of [["KPI", "kpi"], ["Reconciliation", "reconciliation"], ["Continuity", "continuity"], ["People", "people"]]) {
    log(`office opens ${tab}`);
    await page.click(`nav >> text=${tab}`);
    await page.waitForSelector("h1");
    await shot(page, name);
  }

  log("office signs out");
  await page.click("text=Sign out");
  await page.waitForURL(`${url}/signin`);
  await office.close();
  console.log("browser: all steps passed");
} catch (e) {
  console.error(`browser: FAILED at "${step}": ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
