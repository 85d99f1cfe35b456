/**
 * The dashboard's page and its script. The script is served as a file (no inline script, so a
 * strict Content-Security-Policy works) and draws with Chart.js, served from the installed package.
 */

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  )

/** The HTML page; `base` is the router's mount path (`req.baseUrl`). */
export function dashboardHtml(base: string, title: string, refreshMs: number): string {
  const b = escapeHtml(base)
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>
  :root { --fg: #1f2937; --muted: #6b7280; --card: #ffffff; --bg: #f3f4f6; --line: #e5e7eb; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; align-items: baseline; gap: 16px; padding: 16px 24px 0; }
  h1 { font-size: 20px; margin: 0; }
  #updated { color: var(--muted); font-size: 12px; }
  .tiles { display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px; padding: 16px 24px 0; }
  .tile { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
  .tile .label { color: var(--muted); font-size: 12px; }
  .tile .value { font-size: 22px; font-weight: 600; }
  .grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px; padding: 12px 24px 24px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 0; }
  .card.wide { grid-column: span 2; }
  .card h2 { font-size: 13px; margin: 0 0 6px; color: var(--muted); font-weight: 600; }
  .card .chart { position: relative; height: 220px; }
  #error { color: #b91c1c; padding: 0 24px; }
</style>
</head>
<body data-data-url="${b}/data" data-refresh-ms="${refreshMs}">
<header><h1>${escapeHtml(title)}</h1><span id="updated">loading…</span></header>
<div id="error"></div>
<section class="tiles">
  <div class="tile"><div class="label">Requests today</div><div class="value" id="t-requests">–</div></div>
  <div class="tile"><div class="label">Unique visitors today</div><div class="value" id="t-uniques">–</div></div>
  <div class="tile"><div class="label">Avg latency today</div><div class="value" id="t-latency">–</div></div>
  <div class="tile"><div class="label">Server errors today</div><div class="value" id="t-errors">–</div></div>
  <div class="tile"><div class="label">Cache hit ratio today</div><div class="value" id="t-cache">–</div></div>
  <div class="tile"><div class="label">Writes pending / dropped</div><div class="value" id="t-writer">–</div></div>
</section>
<section class="grid">
  <div class="card wide"><h2>Requests per minute (last hour), by status class</h2><div class="chart"><canvas id="c-requests"></canvas></div></div>
  <div class="card"><h2>Status classes today</h2><div class="chart"><canvas id="c-status"></canvas></div></div>
  <div class="card"><h2>Top routes today</h2><div class="chart"><canvas id="c-routes"></canvas></div></div>
  <div class="card"><h2>Top pages today</h2><div class="chart"><canvas id="c-pages"></canvas></div></div>
  <div class="card"><h2>Unique visitors per day</h2><div class="chart"><canvas id="c-uniques"></canvas></div></div>
  <div class="card"><h2>Cache hit ratio per minute</h2><div class="chart"><canvas id="c-cache"></canvas></div></div>
  <div class="card"><h2>Rate-limit rejections per minute</h2><div class="chart"><canvas id="c-ratelimit"></canvas></div></div>
  <div class="card"><h2>Lock waits per minute</h2><div class="chart"><canvas id="c-locks"></canvas></div></div>
</section>
<script src="${b}/assets/chart.umd.min.js"></script>
<script src="${b}/assets/dashboard.js"></script>
</body>
</html>
`
}

/** Browser script: fetches `/data` and draws or updates every chart. */
export const DASHBOARD_SCRIPT = `(function () {
  'use strict';
  var body = document.body;
  var dataUrl = body.getAttribute('data-data-url');
  var refreshMs = Number(body.getAttribute('data-refresh-ms')) || 5000;
  var charts = {};
  var COLORS = { '1xx': '#9ca3af', '2xx': '#16a34a', '3xx': '#2563eb', '4xx': '#f59e0b', '5xx': '#dc2626' };
  Chart.defaults.animation = false;
  Chart.defaults.font.size = 11;

  function clock(t) {
    var d = new Date(t);
    return String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
  }
  function day(t) {
    var d = new Date(t);
    return (d.getMonth() + 1) + '/' + d.getDate();
  }
  function text(id, value) { document.getElementById(id).textContent = value; }
  function draw(id, config) {
    if (charts[id]) {
      charts[id].data = config.data;
      charts[id].update('none');
      return;
    }
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false }, config.options || {});
    charts[id] = new Chart(document.getElementById(id), config);
  }
  function bars(id, items, color) {
    draw(id, {
      type: 'bar',
      data: {
        labels: items.map(function (i) { return i.path.length > 40 ? i.path.slice(0, 39) + '…' : i.path; }),
        datasets: [{ label: 'count', data: items.map(function (i) { return i.count; }), backgroundColor: color }],
      },
      options: { indexAxis: 'y', plugins: { legend: { display: false } } },
    });
  }

  function render(d) {
    var t = d.tiles;
    text('t-requests', t.requestsToday.toLocaleString());
    text('t-uniques', t.uniquesToday.toLocaleString());
    text('t-latency', t.avgLatencyMsToday === null ? '–' : t.avgLatencyMsToday.toFixed(1) + ' ms');
    text('t-errors', t.serverErrorsToday.toLocaleString());
    text('t-cache', t.cacheHitRatioToday === null ? '–' : (t.cacheHitRatioToday * 100).toFixed(1) + ' %');
    text('t-writer', t.pending + ' / ' + t.dropped);
    var labels = d.requests.t.map(clock);
    draw('c-requests', {
      type: 'bar',
      data: {
        labels: labels,
        datasets: ['2xx', '3xx', '4xx', '5xx'].map(function (c) {
          return { label: c, data: d.requests[c], backgroundColor: COLORS[c], stack: 's' };
        }),
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
    });
    var classes = Object.keys(d.statusToday);
    draw('c-status', {
      type: 'doughnut',
      data: {
        labels: classes,
        datasets: [{ data: classes.map(function (c) { return d.statusToday[c]; }), backgroundColor: classes.map(function (c) { return COLORS[c]; }) }],
      },
      options: { plugins: { legend: { position: 'right' } } },
    });
    bars('c-routes', d.topRoutes, '#6366f1');
    bars('c-pages', d.topPages, '#0ea5e9');
    draw('c-uniques', {
      type: 'bar',
      data: {
        labels: d.uniques.map(function (p) { return day(p.t); }),
        datasets: [{ label: 'visitors', data: d.uniques.map(function (p) { return p.value; }), backgroundColor: '#14b8a6' }],
      },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
    });
    draw('c-cache', {
      type: 'line',
      data: {
        labels: labels,
        datasets: [{ label: 'hit ratio %', data: d.cache.ratio.map(function (r) { return r === null ? null : r * 100; }), borderColor: '#16a34a', backgroundColor: '#16a34a', spanGaps: true, pointRadius: 1 }],
      },
      options: { scales: { y: { min: 0, max: 100 } }, plugins: { legend: { display: false } } },
    });
    draw('c-ratelimit', {
      type: 'bar',
      data: { labels: labels, datasets: [{ label: 'blocked', data: d.rateLimit.blocked, backgroundColor: '#f59e0b' }] },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
    });
    draw('c-locks', {
      type: 'bar',
      data: { labels: labels, datasets: [{ label: 'waits', data: d.locks.waits, backgroundColor: '#a855f7' }] },
      options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
    });
    text('updated', 'updated ' + new Date(d.generatedAt).toLocaleTimeString());
    body.setAttribute('data-ready', 'true');
  }

  function load() {
    fetch(dataUrl, { headers: { accept: 'application/json' } })
      .then(function (res) {
        if (!res.ok) throw new Error('analytics data: HTTP ' + res.status);
        return res.json();
      })
      .then(function (d) {
        text('error', '');
        render(d);
      })
      .catch(function (e) { text('error', String(e.message || e)); })
      .then(function () { setTimeout(load, refreshMs); });
  }
  load();
})();
`
