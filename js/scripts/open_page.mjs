// Opens a page in headless Chromium and prints the text of its #out element once the page has
// written it (js/pack_check.sh: README.md's browser example). Fails on a page error, or on a request
// that leaves the page's own server (every module and the wasm must be served by the project).
//
//   CHROMIUM=/usr/bin/chromium node js/scripts/open_page.mjs URL
import { chromium } from "playwright-core";

const url = process.argv[2];
const origin = new URL(url).origin;
// The server was just started in the background: wait until it answers.
for (let tries = 0; ; tries++) {
  try {
    if ((await fetch(url)).ok) break;
  } catch (error) {
    if (tries === 50) throw new Error(`${url} does not answer: ${error.message}`);
  }
  await new Promise((done) => setTimeout(done, 100));
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => message.type() === "error" && problems.push(`console: ${message.text()}`));
  page.on("response", (response) => response.status() >= 400 && problems.push(`HTTP ${response.status()}: ${response.url()}`));
  await page.route("**/*", (route) => {
    if (new URL(route.request().url()).origin === origin) return route.continue();
    problems.push(`a request left ${origin}: ${route.request().url()}`);
    return route.abort();
  });
  await page.goto(url);
  // Until the page writes its result, or fails (a missing module is only a console error).
  const deadline = Date.now() + 60_000;
  while (!problems.length && !(await page.$eval("#out", (out) => out.textContent).catch(() => ""))) {
    if (Date.now() > deadline) problems.push(`${url} wrote nothing to #out in 60 s`);
    await new Promise((done) => setTimeout(done, 100));
  }
  if (problems.length) throw new Error(problems.join("\n"));
  console.log(await page.$eval("#out", (out) => out.textContent));
} finally {
  await browser.close();
}
