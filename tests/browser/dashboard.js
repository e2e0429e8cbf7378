// Drives the dashboard in Chromium (playwright-core) and prints what a person would see, as one
// JSON line, for tests/browser.rs to judge. Usage: node dashboard.js URL-with-#token=...
// Needs NODE_PATH (playwright-core) and IOTSTREAM_TEST_CHROMIUM (the browser).
"use strict";
const { chromium } = require("playwright-core");

(async () => {
  const url = process.argv[2];
  const browser = await chromium.launch({
    executablePath: process.env.IOTSTREAM_TEST_CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const seen = { errors: [] };
  try {
    const page = await browser.newPage();
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") seen.errors.push(m.text());
    });
    page.on("pageerror", (e) => seen.errors.push("pageerror: " + e.message));
    await page.goto(url);
    await page.waitForFunction(
      () =>
        document.querySelectorAll("#alerts tbody tr").length > 0 &&
        document.querySelector("#devices tbody").textContent.includes("temperature"),
      null,
      { timeout: 15000 },
    );
    seen.urlAfterLoad = page.url();
    seen.devices = await page.textContent("#devices tbody");
    seen.deviceCount = await page.textContent("#device-count");
    // Live: the test sends pump-1 a new reading once told we are ready; it must show within 5 s,
    // well before the 10 s poll (so through the stream).
    console.log(JSON.stringify({ ready: true }));
    const t = Date.now();
    await page.waitForFunction(
      () => document.querySelector("#devices tbody").textContent.includes("temperature 92.5"),
      null,
      { timeout: 5000 },
    );
    seen.liveUpdateMs = Date.now() - t;
    seen.alerts = await page.textContent("#alerts tbody");
    await page.click("#alerts button");
    await page.waitForFunction(() => document.querySelectorAll("#alerts tbody tr").length === 0, null, { timeout: 15000 });
    seen.alertsAfterAck = await page.textContent("#alert-count");

    const wrong = await browser.newPage();
    await wrong.goto(url.replace(/#token=.*/, "#token=not-the-token"));
    await wrong.waitForSelector("#login", { state: "visible", timeout: 15000 });
    seen.wrongTokenShowsLogin = await wrong.isVisible("#login");
    seen.wrongTokenHidesBoard = !(await wrong.isVisible("#board"));
  } catch (e) {
    seen.failure = String(e);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
})();
