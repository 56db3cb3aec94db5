// Drives ota's chat page in a real browser (Debian's Chromium, through playwright-core): sign in
// with a token, plan and confirm a pet_feeder update, follow the rollout to COMPLETED, ask for a
// refused update (beehive_scale's OTA gate is closed in the demo world), ask whether a device is
// online (a device status card), plan and confirm a reboot (a command card, then its run until
// the device answers SUCCEEDED), then check the phone layout. Prints one line per step; exits
// non-zero with the reason on any failure.
//
// Environment:
//   OTA_URL             the server, e.g. http://127.0.0.1:8080 (required)
//   OTA_TOKEN           an operator's token from `ota token create --role operator` (required)
//   OTA_SCREENSHOT_DIR  where chat.png, refusal.png, devices.png and phone.png go (default: the
//                       current folder)
//   CHROMIUM_PATH       the browser (default: /usr/bin/chromium or /usr/bin/chromium-browser)
//
// Run by adapters/cli/tests/browser.rs with OTA_TEST_BROWSER=1.

import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const UPDATE = 'Update all pet_feeder devices to the latest firmware';
const REFUSED = 'Update all beehive_scale devices to the latest firmware';
const STATUS = 'Is pet_feeder-03 online?';
const COMMAND = 'Reboot pet_feeder-03';
const COMMAND_TIMEOUT = 60_000;
const STEP_TIMEOUT = 30_000;
const ROLLOUT_TIMEOUT = 120_000;

class Failure extends Error {}
// Before the browser starts: print and exit. After: throw, so the browser is closed first.
let browserStarted = false;
function fail(message) {
  if (browserStarted) throw new Failure(message);
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

const url = process.env.OTA_URL;
const token = process.env.OTA_TOKEN;
if (!url) fail('set OTA_URL to the server, e.g. http://127.0.0.1:8080');
if (!token) fail('set OTA_TOKEN to a token from `ota token create --role operator`');
const shots = path.resolve(process.env.OTA_SCREENSHOT_DIR || '.');
mkdirSync(shots, { recursive: true });
const executablePath =
  process.env.CHROMIUM_PATH || ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
if (!executablePath || !existsSync(executablePath)) {
  fail(`no Chromium at ${executablePath || '/usr/bin/chromium or /usr/bin/chromium-browser'} (apt-get install chromium, or set CHROMIUM_PATH)`);
}

let step = 0;
const say = (line) => console.log(`[${++step}] ${line}`);

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
browserStarted = true;
const pageErrors = [];
let page;
let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, reducedMotion: 'reduce' });
  page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT);
  page.on('pageerror', (e) => pageErrors.push(String(e && e.stack ? e.stack : e)));
  page.on('console', (m) => {
    if (m.type() === 'error') console.log(`    (browser console) ${m.text()}`);
  });

  // -- Sign in ------------------------------------------------------------------------
  const response = await page.goto(url, { waitUntil: 'load' });
  if (!response || !response.ok()) fail(`GET ${url} answered ${response ? response.status() : 'nothing'}`);
  say(`opened ${url}: "${await page.title()}"`);
  await page.getByTestId('token').fill(token);
  await page.getByTestId('sign-in').click();
  await page.getByTestId('message').waitFor({ state: 'visible' });
  const who = (await page.locator('#who-text').textContent()) || '';
  if (!/operator|admin/.test(who)) fail(`signed in, but the page shows "${who}" instead of an operator`);
  say(`signed in as ${who}`);
  await page.getByTestId('fleet').locator('.ftype').first().waitFor();
  say(`fleet panel lists ${await page.getByTestId('fleet').locator('.ftype').count()} device types`);

  const assistants = page.getByTestId('assistant-message');
  async function ask(prompt) {
    const before = await assistants.count();
    await page.getByTestId('message').fill(prompt);
    await page.getByTestId('send').click();
    await page.waitForFunction(
      (n) => document.querySelectorAll('[data-testid="assistant-message"]').length > n
        || document.querySelector('#log [role="alert"]'),
      before,
    );
    const alert = page.locator('#log [role="alert"]');
    if (await alert.count()) fail(`asking "${prompt}" showed an error: ${await alert.last().innerText()}`);
    return assistants.nth(before);
  }

  // -- Plan and confirm -----------------------------------------------------------------
  const planned = await ask(UPDATE);
  const card = planned.getByTestId('plan-card');
  await card.waitFor();
  const heading = await card.locator('h4').allInnerTexts();
  say(`asked "${UPDATE}": plan card for ${heading.join(', ') || '(no deployment)'}`);
  if (!heading.some((t) => t.includes('pet_feeder'))) fail(`the plan card names no pet_feeder deployment: ${await card.innerText()}`);
  const confirm = planned.getByTestId('confirm');
  if (!(await confirm.isEnabled())) fail('the plan card has no enabled confirm button');
  await confirm.click();
  const rollout = page.getByTestId('rollout').first();
  await rollout.waitFor();
  const id = await rollout.getAttribute('data-rollout-id');
  say(`confirmed: rollout ${id} is shown`);
  if (await confirm.isEnabled()) fail('the confirm button is still enabled after use');

  const panel = page.locator(`[data-testid="rollout"][data-rollout-id="${id}"]`);
  try {
    await page.waitForFunction(
      (rid) => {
        const el = [...document.querySelectorAll('[data-testid="rollout"]')].find((e) => e.dataset.rolloutId === rid);
        if (!el) return false;
        const bar = el.querySelector('[data-testid="progress"]');
        const status = el.querySelector('[data-testid="rollout-status"]');
        return bar && bar.getAttribute('aria-valuenow') === '100' && status && status.textContent.includes('COMPLETED');
      },
      id,
      { timeout: ROLLOUT_TIMEOUT, polling: 250 },
    );
  } catch (e) {
    const now = await panel.getByTestId('progress').getAttribute('aria-valuenow').catch(() => '?');
    const text = await panel.innerText().catch(() => '?');
    fail(`rollout ${id} did not reach 100 % and COMPLETED within ${ROLLOUT_TIMEOUT / 1000} s (progress ${now}): ${text.replace(/\s+/g, ' ')}`);
  }
  const progressText = (await panel.getByTestId('progress').innerText()).trim();
  if (!progressText.includes('100 %')) fail(`the progress bar reads "${progressText}", not "100 %"`);
  const legend = (await panel.locator('.legend').innerText()).replace(/\s+/g, ' ');
  say(`rollout ${id}: COMPLETED, ${progressText}: ${legend}`);
  if (!(await panel.locator('.timeline svg').count())) fail('the rollout has no timeline chart');
  // The fleet panel refreshes after the rollout ends.
  await page.waitForFunction(() => {
    const row = document.querySelector('[data-testid="fleet"] [data-device-type="pet_feeder"]');
    return row && /\b4 on latest\b/.test(row.textContent);
  }, null, { timeout: STEP_TIMEOUT }).then(
    () => say('fleet panel: every pet_feeder runs the latest firmware'),
    () => say('fleet panel: pet_feeder not yet all on latest (devices may still be reporting)'),
  );
  await page.screenshot({ path: path.join(shots, 'chat.png'), fullPage: true });
  say(`saved ${path.join(shots, 'chat.png')}`);

  // -- A refusal ------------------------------------------------------------------------
  const refused = await ask(REFUSED);
  // The reply text and the plan card's refusals, not the speaker label (styled upper-case).
  const refusalText = (await refused.locator('.text, .refusals').allInnerTexts()).join('\n');
  if (!/disabled|OTA/.test(refusalText)) fail(`the answer to "${REFUSED}" does not explain the refusal: ${refusalText}`);
  const enabledConfirms = await refused.locator('[data-testid="confirm"]:enabled').count();
  if (enabledConfirms) fail(`the refusal offers ${enabledConfirms} enabled confirm button(s)`);
  say(`asked "${REFUSED}": refused (${refusalText.split('\n').find((l) => /disabled|OTA/.test(l)).trim()})`);
  await page.screenshot({ path: path.join(shots, 'refusal.png'), fullPage: true });
  say(`saved ${path.join(shots, 'refusal.png')}`);

  // -- A device status card ------------------------------------------------------------
  const status = await ask(STATUS);
  const deviceCard = status.locator('[data-testid="device-card"][data-thing="pet_feeder-03"]');
  await deviceCard.waitFor();
  const pill = (await deviceCard.getByTestId('connectivity').innerText()).trim();
  if (pill !== 'online') fail(`the device card of pet_feeder-03 says "${pill}", not "online": ${await deviceCard.innerText()}`);
  const cardText = (await deviceCard.innerText()).replace(/\s+/g, ' ');
  if (!/factory-floor-2/.test(cardText)) fail(`the device card does not show the device's location: ${cardText}`);
  say(`asked "${STATUS}": device card ${cardText}`);

  // -- A command plan, confirmed --------------------------------------------------------
  const commandReply = await ask(COMMAND);
  const commandCard = commandReply.getByTestId('command-card');
  await commandCard.waitFor();
  const targets = await commandCard.getByTestId('command-targets').innerText();
  if (!targets.includes('pet_feeder-03')) fail(`the command card does not list pet_feeder-03: ${await commandCard.innerText()}`);
  const planIdText = (await commandCard.locator('.plan-id').innerText()).trim();
  if (!planIdText.startsWith('cplan-')) fail(`the command card shows no command plan id: "${planIdText}"`);
  const sendButton = commandCard.getByTestId('confirm');
  if (!(await sendButton.isEnabled())) fail('the command card has no enabled confirm button');
  await sendButton.click();
  const run = page.getByTestId('command-run').last();
  await run.waitFor();
  const runId = await run.getAttribute('data-run-id');
  say(`confirmed ${planIdText}: command run ${runId} is shown`);
  try {
    await page.waitForFunction(
      (rid) => {
        const el = [...document.querySelectorAll('[data-testid="command-run"]')].find((e) => e.dataset.runId === rid);
        const ex = el && el.querySelector('[data-testid="execution"][data-thing="pet_feeder-03"]');
        return ex && ex.dataset.state === 'SUCCEEDED';
      },
      runId,
      { timeout: COMMAND_TIMEOUT, polling: 250 },
    );
  } catch (e) {
    fail(`the reboot of pet_feeder-03 did not succeed within ${COMMAND_TIMEOUT / 1000} s: ${(await run.innerText()).replace(/\s+/g, ' ')}`);
  }
  if (await sendButton.isEnabled()) fail('the command confirm button is still enabled after use');
  say(`command run ${runId}: ${(await run.innerText()).replace(/\s+/g, ' ')}`);
  await page.screenshot({ path: path.join(shots, 'devices.png'), fullPage: true });
  say(`saved ${path.join(shots, 'devices.png')}`);

  // -- Phone width ----------------------------------------------------------------------
  await page.setViewportSize({ width: 375, height: 800 });
  await page.waitForTimeout(300);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  if (width > 375) {
    const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > 376)
      .slice(0, 5)
      .map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}.${e.className && e.className.baseVal === undefined ? e.className : ''}`));
    fail(`at 375 px the page scrolls sideways (scrollWidth ${width}); too wide: ${wide.join(', ')}`);
  }
  await page.screenshot({ path: path.join(shots, 'phone.png'), fullPage: true });
  say(`phone width: scrollWidth ${width} <= 375; saved ${path.join(shots, 'phone.png')}`);

  if (pageErrors.length) fail(`the page threw: ${pageErrors.join('\n')}`);
  say('passed');
} catch (e) {
  exitCode = 1;
  const shot = path.join(shots, 'failure.png');
  if (page) await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
  console.error(`FAIL: ${e instanceof Failure ? e.message : (e && e.stack) || e} (screenshot: ${shot})`);
  if (pageErrors.length) console.error(`the page threw: ${pageErrors.join('\n')}`);
} finally {
  await browser.close().catch(() => {});
}
process.exit(exitCode);
