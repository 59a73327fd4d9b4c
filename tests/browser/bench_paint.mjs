// Time to first paint of the dashboard's views, for bench/dashboard_ui.py:
//   node bench_paint.mjs URL TOKEN DB ROUNDS
// Prints one JSON object: per round, the sign-in page's first contentful
// paint (static assets only: the baseline), and the time from navigation
// start to the database list and to the timeline being drawn (the marks
// app.js sets one frame after it drew them).
import { chromium } from 'playwright-core';

const [url, token, db, roundsArg] = process.argv.slice(2);
const rounds = Number(roundsArg || 5);
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const res = { signin_fcp_ms: [], list_ms: [], timeline_ms: [], redraw_ms: [], timeline_mode: null };
async function mark(page, name) {
  await page.waitForFunction((n) => performance.getEntriesByName(n).length > 0, name, { timeout: 60000 });
  return page.evaluate((n) => performance.getEntriesByName(n)[0].startTime, name);
}
try {
  for (let i = 0; i < rounds; i++) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    await page.goto(url + '/ui/');
    await page.waitForFunction(() => performance.getEntriesByName('first-contentful-paint').length > 0);
    res.signin_fcp_ms.push(await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0].startTime));
    await page.fill('#token', token);
    await page.click('#login-btn');
    await page.waitForSelector('#view-list:not([hidden])');
    const list = await ctx.newPage();
    await list.goto(url + '/ui/#/');
    res.list_ms.push(await mark(list, 'list-painted'));
    const tl = await ctx.newPage();
    await tl.goto(url + '/ui/#/db/' + encodeURIComponent(db));
    res.timeline_ms.push(await mark(tl, 'timeline-painted'));
    res.timeline_mode = await tl.evaluate(() => S.tl.mode);
    // The script's own share: drawing the timeline again, timed.
    res.redraw_ms.push(await tl.evaluate(() => { const t = performance.now(); drawTimeline(); return performance.now() - t; }));
    // Where the time went: each request of the timeline page (start, end).
    res.timeline_requests = await tl.evaluate(() => performance.getEntriesByType('resource').map((e) =>
      [e.name.replace(location.origin, '').slice(0, 40), Math.round(e.startTime), Math.round(e.responseEnd)]));
    res.timeline_count = await tl.evaluate(() => (S.tl.buckets || []).reduce((s, b) => s + b.count, 0) + (S.tl.transactions || []).length);
    await ctx.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(res));
