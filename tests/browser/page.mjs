// Drives sluice's status page in Debian's Chromium (playwright-core, no browser download),
// for tests/page.rs:
//
//   node page.mjs <base-url> <check> [args…]
//
// Checks (each waits for its condition, up to 60 s, then fails):
//   loads <table>…            the page loads with no console error, shows every table, and the
//                             first table's lag moves (two different values, a chart drawn)
//   stopped <table> <text>    the table's card says "stopped" and shows the error containing <text>
//   snapshot <table>          the table's card shows a copy in progress (a progress bar with rows);
//                             may start before sluice serves (it waits for /healthz)
//   unreadable <table>        the page says the status cannot be read, and still shows the table
//                             (as the process knows it live)
//   verify <table>            the table's card shows its last background verify, equal
//   phone                     at a phone's width nothing overflows sideways
// Every check also runs axe-core on the page as it is then, and fails on a serious or
// critical violation; `--screenshot <file>` saves the page. Exit 0 when the check holds;
// otherwise 1 with why on stderr.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const TIMEOUT = 60_000;

const args = process.argv.slice(2);
let screenshot = null;
const at = args.indexOf('--screenshot');
if (at >= 0) {
  screenshot = args[at + 1];
  args.splice(at, 2);
}
const [base, check, ...rest] = args;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  // playwright gives the browser a new empty profile of its own.
});
const problems = [];
try {
  const phone = check === 'phone';
  const context = await browser.newContext(
    phone ? { viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true } : { viewport: { width: 1280, height: 900 } },
  );
  const page = await context.newPage();
  page.on('console', (m) => {
    // While sluice starts, /status answers 503 until the target's state table exists (the
    // page says so); the browser logs that answer as an error.
    if ((check === 'snapshot' || check === 'unreadable') && /status of 503/.test(m.text())) return;
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  // sluice may be starting: wait until it serves.
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${base}/healthz never answered`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const response = await page.goto(`${base}/`, { waitUntil: 'load' });
  if (!response.ok()) throw new Error(`GET / answered ${response.status()}`);
  const card = (t) => page.locator(`article.card[data-table="${t}"]`);

  if (check === 'loads') {
    for (const t of rest) await card(t).waitFor({ timeout: TIMEOUT });
    const lag = card(rest[0]).locator('.lag-value');
    const first = await lag.textContent();
    await page.waitForFunction(
      ([t, was]) => {
        const c = document.querySelector(`article.card[data-table="${t}"]`);
        const now = c.querySelector('.lag-value').textContent;
        return now !== was && now !== 'unknown' && Number(c.querySelector('svg').dataset.points) >= 2;
      },
      [rest[0], first],
      { timeout: TIMEOUT, polling: 250 },
    );
    const header = await page.locator('#process').textContent();
    for (const word of ['Version', 'Capture', 'Memory', 'Up']) {
      if (!header.includes(word)) throw new Error(`the header lacks ${word}: ${header}`);
    }
    console.log(`lag moved from ${first} to ${await lag.textContent()}; header: ${header}`);
  } else if (check === 'stopped') {
    const [t, text] = rest;
    await page.waitForFunction(
      ([t, text]) => {
        const c = document.querySelector(`article.card[data-table="${t}"]`);
        return c && c.dataset.state === 'stopped' && c.querySelector('.error').textContent.includes(text)
          && !c.querySelector('.stopped-by').hidden;
      },
      [t, text],
      { timeout: TIMEOUT, polling: 250 },
    );
    console.log(`stopped: ${await card(t).locator('.error').textContent()}`);
  } else if (check === 'snapshot') {
    const [t] = rest;
    await page.waitForFunction(
      (t) => {
        const c = document.querySelector(`article.card[data-table="${t}"]`);
        if (!c || c.dataset.state !== 'snapshotting') return false;
        const p = c.querySelector('progress');
        return !p.hidden && p.value > 0 && /rows/.test(c.querySelector('.copy-text').textContent);
      },
      t,
      { timeout: TIMEOUT, polling: 100 },
    );
    console.log(`snapshot: ${await card(t).locator('.copy-text').textContent()}`);
  } else if (check === 'unreadable') {
    const [t] = rest;
    await page.waitForFunction(
      (t) => {
        const p = document.getElementById('problem');
        const c = document.querySelector(`article.card[data-table="${t}"]`);
        return !p.hidden && /cannot be read/.test(p.textContent) && c && !c.hidden;
      },
      t,
      { timeout: TIMEOUT, polling: 250 },
    );
    console.log(`unreadable: ${await page.locator('#problem').textContent()}`);
  } else if (check === 'verify') {
    const [t] = rest;
    await page.waitForFunction(
      (t) => {
        const c = document.querySelector(`article.card[data-table="${t}"]`);
        const dd = c && c.querySelector('dd.verify');
        return dd && !dd.hidden && /equal/i.test(dd.textContent);
      },
      t,
      { timeout: TIMEOUT, polling: 250 },
    );
    console.log(`verify: ${await card(t).locator('dd.verify').textContent()}`);
  } else if (check === 'phone') {
    await page.locator('article.card').first().waitFor({ timeout: TIMEOUT });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (wide > 0) throw new Error(`at 375 px the page is ${wide} px too wide`);
  } else {
    throw new Error(`unknown check ${check}`);
  }

  // Through the DevTools protocol: the page's own policy allows no inline script.
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => await window.axe.run(document, { resultTypes: ['violations'] }));
  for (const v of result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')) {
    problems.push(`axe ${v.impact}: ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join('; ')})`);
  }
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  problems.push(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
