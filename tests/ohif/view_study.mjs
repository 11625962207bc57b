// Opens one study in OHIF in headless Chromium, screenshots it, loads its SEG or SR the way a user does (double-click
// the thumbnail; for a SEG, say yes to the hydration prompt) and screenshots again. Prints one JSON object on stdout:
// the viewport's box in each screenshot, the text OHIF drew on the viewport after loading (an SR's measurement
// labels), the page's console messages and errors, and the step that failed, if any.
// Usage: node view_study.mjs URL OUT_DIR CHROMIUM TIMEOUT_MS SEG|SR
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, outDir, executablePath, timeoutArg, modality] = process.argv.slice(2);
const timeout = Number(timeoutArg);
const SETTLE_MS = 1500; // the viewport draws a frame or two after the network is idle
const report = { console: [], pageErrors: [], failedStep: null, error: null, boxes: {}, viewportText: [] };
const userDataDir = mkdtempSync(join(tmpdir(), 'ohif-chromium-'));

// A closed network, no GPU, root: no sandbox, nothing fetched in the background, WebGL in software.
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: [
    '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--no-first-run', '--disable-quic', '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(timeout);
page.on('console', message => report.console.push({ type: message.type(), text: message.text() }));
page.on('pageerror', error => report.pageErrors.push(String(error)));
// The first-visit onboarding tour would cover the viewport and catch the clicks: mark it as seen.
await page.addInitScript(() => localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour'])));

const viewport = page.locator('.cornerstone-viewport-element').first();

async function settle() {
  await page.waitForLoadState('networkidle');
  await page.waitForTimeout(SETTLE_MS);
}

async function shoot(name) {
  await page.screenshot({ path: join(outDir, `${name}.png`) });
  report.boxes[name] = await viewport.boundingBox();
}

// An error in the page (uncaught, or one React caught and logged: a crashed view is a black page) ends the run at
// once rather than at the timeout; the test fails on any of them anyway.
const crashed = new Promise((_, reject) => {
  page.on('pageerror', error => reject(new Error(`page error: ${error}`)));
  page.on('console', message => message.type() === 'error' && reject(new Error(`console error: ${message.text()}`)));
});
crashed.catch(() => {});
let step;
async function run(name, action) {
  step = name;
  await Promise.race([action(), crashed]);
}

try {
  await run('open the study', async () => {
    await page.goto(url);
    await viewport.waitFor({ state: 'visible' });
    await page.locator('.cornerstone-canvas').first().waitFor({ state: 'visible' });
    await settle();
    await shoot('before');
  });
  const thumbnail = page.locator('[data-cy="study-browser-thumbnail-no-image"]').filter({ hasText: modality }).first();
  await run(`find the ${modality} thumbnail`, () => thumbnail.waitFor({ state: 'visible' }));
  await run(`load the ${modality} (double-click its thumbnail)`, async () => {
    await thumbnail.dblclick();
    await settle();
  });
  if (modality === 'SEG') {
    await run('hydrate the SEG (yes to the prompt)', async () => {
      const yes = page.locator('[data-cy="yes-hydrate-btn"]');
      await yes.waitFor({ state: 'visible' });
      await yes.click();
      await page.getByText('Loading SEG').waitFor({ state: 'hidden' });
      await settle();
    });
  }
  await run(`screenshot the loaded ${modality}`, async () => {
    await shoot('after');
    // the SR display tool draws each measurement's labels on the viewport, one SVG tspan a line
    report.viewportText = await viewport.locator('svg text tspan').allTextContents();
  });
} catch (error) {
  report.failedStep = step;
  report.error = String(error).split('\n')[0];
  await page.screenshot({ path: join(outDir, 'failed.png') }).catch(() => {});
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report));
