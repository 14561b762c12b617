// The README's screenshot of the page (docs/web-page.png): headless Debian chromium explains
// an example photo with the bundled model. Run by hand after `tools/web.sh build`:
//   cd web && node tests/screenshot.mjs [PHOTO] [OUT]   (default cat.jpg, ../docs/web-page.png)
import { join } from 'node:path';
import { REPO, launch, serve, watchConsole } from './support.mjs';

const photo = process.argv[2] || 'cat.jpg';
const out = process.argv[3] || join(REPO, 'docs', 'web-page.png');
const server = await serve();
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 }, deviceScaleFactor: 1 });
  page.setDefaultTimeout(15 * 60_000);
  watchConsole(page);
  await page.goto(server.url);
  await page.waitForSelector('body[data-state="ready"]');
  await page.click(`.example[data-photo="${photo}"]`);
  await page.waitForSelector('#explain:not([disabled])');
  await page.click('#explain');
  await page.waitForFunction(() => document.body.dataset.state === 'ready' &&
    /^Explained/.test(document.getElementById('status').textContent));
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}: ${await page.textContent('#status')}`);
} finally {
  await browser.close();
  await server.close();
}
