// sluice's status page: reads /status every REFRESH_MS and shows it. Every text from the
// server goes in with textContent (never as HTML). The page only reads.
'use strict';

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}

function setText(e, text) {
  if (e.textContent !== text) e.textContent = text;
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return 'unknown';
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  return fmtDuration(s);
}

function fmtDuration(s) {
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function fmtBytes(b) {
  if (b === null || b === undefined) return 'unknown';
  const mib = b / (1024 * 1024);
  return mib >= 10 ? `${Math.round(mib)} MiB` : `${mib.toFixed(1)} MiB`;
}

function fmtInt(n) {
  return n === null || n === undefined ? 'unknown' : Number(n).toLocaleString('en-US');
}

function fmtTime(iso) {
  if (!iso) return 'none yet';
  const t = new Date(iso);
  const ago = (Date.now() - t.getTime()) / 1000;
  const when = t.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  return ago >= 0 && ago < 86400 ? `${when} (${fmtSeconds(ago)} ago)` : when;
}

// A table's state: the label shown, and its kind (which colour; the label says it all).
function stateOf(t, me) {
  if (t.live) {
    const kind = { 'caught up': 'ok', streaming: 'ok', 'catching up': 'busy', snapshotting: 'busy', stopped: 'bad' }[t.live.state] || 'idle';
    return { label: t.live.state, kind };
  }
  if (t.last_error && !t.owner) return { label: 'stopped', kind: 'bad' };
  if (t.copy) return { label: 'snapshotting', kind: 'busy' };
  if (t.owner && t.owner !== me) return { label: 'held by another member', kind: 'idle' };
  return { label: 'not running', kind: 'idle' };
}

function lagOf(t) {
  if (t.live && t.live.lag_seconds !== null && t.live.lag_seconds !== undefined) return t.live.lag_seconds;
  return t.lag_seconds;
}

// One row of a card's <dl>, hidden while it has nothing to say.
function row(dl, label, className) {
  const dt = el('dt', { textContent: label });
  const dd = el('dd', className ? { className } : {});
  dl.append(dt, dd);
  return {
    dt,
    dd,
    show(on) {
      dt.hidden = !on;
      dd.hidden = !on;
    },
  };
}

const cards = new Map();

function card(name) {
  let c = cards.get(name);
  if (c) return c;
  const id = `table-${cards.size}`;
  const title = el('h3', { id, textContent: name });
  const state = el('span', { className: 'state' });
  const article = el('article', { className: 'card' }, el('header', {}, title, state));
  article.setAttribute('aria-labelledby', id);
  article.dataset.table = name;
  const dl = el('dl');
  article.append(dl);
  const rows = {
    rows: row(dl, 'Rows replicated'),
    lag: row(dl, 'Lag'),
    snapshot: row(dl, 'Snapshot'),
    position: row(dl, 'Position'),
    commit: row(dl, 'Last commit'),
    owner: row(dl, 'Owner'),
    verify: row(dl, 'Last verify', 'verify'),
    mapping: row(dl, 'Mapping', 'mapping'),
    retrying: row(dl, 'Retrying after'),
  };
  const lagText = el('span', { className: 'lag-value' });
  const chart = document.createElementNS(SVG, 'svg');
  chart.setAttribute('viewBox', '0 0 100 20');
  chart.setAttribute('preserveAspectRatio', 'none');
  chart.setAttribute('role', 'img');
  rows.lag.dd.append(el('span', { className: 'lag' }, lagText, chart));
  const progress = el('progress', { max: 100 });
  progress.setAttribute('aria-label', `${name}: snapshot progress`);
  const progressText = el('span', { className: 'copy-text' });
  rows.snapshot.dd.append(progress, progressText);
  const errorHead = el('p', { textContent: 'Stopped by:' });
  const error = el('pre', { className: 'error' });
  const errorBox = el('div', { className: 'stopped-by' }, errorHead, error);
  errorBox.hidden = true;
  article.append(errorBox);
  c = { article, state, rows, lagText, chart, progress, progressText, error, errorBox };
  cards.set(name, c);
  return c;
}

function drawChart(svg, hist, name) {
  const values = (hist && hist.seconds) || [];
  while (svg.firstChild) svg.firstChild.remove();
  const known = values.filter((v) => v !== null);
  const top = Math.max(0.05, ...known);
  const n = values.length;
  let points = [];
  const flush = () => {
    if (points.length === 1) points.push(points[0].replace(/^[\d.]+/, (x) => String(Number(x) + 0.5)));
    if (points.length > 1) {
      const line = document.createElementNS(SVG, 'polyline');
      line.setAttribute('points', points.join(' '));
      svg.append(line);
    }
    points = [];
  };
  values.forEach((v, i) => {
    if (v === null) return flush();
    const x = n > 1 ? (i * 100) / (n - 1) : 100;
    const y = 20 - (v / top) * 19;
    points.push(`${x.toFixed(2)},${y.toFixed(2)}`);
  });
  flush();
  const minutes = n && hist.step_seconds ? (n * hist.step_seconds) / 60 : 0;
  const label = known.length
    ? `${name}: lag over the last ${minutes < 1 ? `${Math.round(minutes * 60)} s` : `${minutes.toFixed(1)} min`}, ` +
      `highest ${fmtSeconds(Math.max(...known))}, lowest ${fmtSeconds(Math.min(...known))}`
    : `${name}: no lag measured yet`;
  svg.setAttribute('aria-label', label);
  svg.dataset.points = String(known.length);
}

function renderTable(t, me, capture) {
  const c = card(t.table);
  // Polling keeps a watermark (cursor and key); binlog capture a position in the binlog.
  setText(c.rows.position.dt, capture === 'poll' ? 'Watermark' : 'Position');
  const s = stateOf(t, me);
  setText(c.state, s.label);
  c.state.className = `state ${s.kind}`;
  c.article.classList.toggle('stopped', s.label === 'stopped');
  c.article.dataset.state = s.label;

  setText(c.rows.rows.dd, t.rows_replicated === undefined ? `${fmtInt(t.live.rows_written)} since this process started` : fmtInt(t.rows_replicated));
  c.rows.rows.show(true);

  const lag = lagOf(t);
  setText(c.lagText, fmtSeconds(lag));
  c.lagText.dataset.seconds = lag === null || lag === undefined ? '' : String(lag);
  drawChart(c.chart, t.live && t.live.lag_history, t.table);
  c.rows.lag.show(true);

  const copy = t.copy;
  c.rows.snapshot.show(Boolean(copy) || t.initial_load);
  if (copy) {
    if (copy.percent === null || copy.percent === undefined) c.progress.removeAttribute('value');
    else c.progress.value = copy.percent;
    const of = copy.rows_estimated ? ` of about ${fmtInt(copy.rows_estimated)}` : '';
    const pct = copy.percent === null || copy.percent === undefined ? '' : ` (${copy.percent.toFixed(0)}%)`;
    const eta = copy.eta_seconds === null || copy.eta_seconds === undefined ? '' : `, about ${fmtDuration(copy.eta_seconds)} left`;
    const how = copy.beside ? 'beside the stream' : 'before the stream';
    setText(c.progressText, ` ${fmtInt(copy.rows_copied)}${of} rows${pct} in ${fmtInt(copy.chunks)} chunks${eta}, ${how}`);
    c.progress.hidden = false;
  } else if (t.initial_load) {
    c.progress.hidden = true;
    setText(c.progressText, 'initial load: the primary key is built once caught up');
  }

  // Without the stored state (the target cannot be read), only what the process knows live.
  const stored = t.rows_replicated !== undefined;
  setText(c.rows.position.dd, t.position_text || 'none yet');
  c.rows.position.show(stored);
  setText(c.rows.commit.dd, fmtTime(t.last_commit));
  c.rows.commit.show(stored);
  setText(c.rows.owner.dd, t.owner ? (t.owner === me ? `${t.owner} (this process)` : t.owner) : 'none');
  c.rows.owner.show(stored);
  c.rows.verify.show(Boolean(t.verify_text));
  setText(c.rows.verify.dd, t.verify_text || '');
  c.rows.mapping.show(Boolean(t.mapping));
  setText(c.rows.mapping.dd, t.mapping || '');

  const stoppedBy = (t.live && t.live.error) || (s.label === 'stopped' ? t.last_error : null);
  c.errorBox.hidden = !stoppedBy;
  setText(c.error, stoppedBy || '');
  const retrying = t.live ? t.live.retrying : null;
  c.rows.retrying.show(Boolean(retrying));
  setText(c.rows.retrying.dd, retrying || '');
  return s.label;
}

function renderProcess(p, pipeline) {
  setText($('pipeline'), pipeline ? `— ${pipeline}` : '');
  if (pipeline) document.title = `sluice status — ${pipeline}`;
  if (!p) return;
  const facts = [
    ['Version', p.version],
    ['Capture', p.capture === 'binlog' ? 'binlog' : 'polling'],
    ['Member', `${p.member} (${p.role})`],
    ['Up', fmtDuration(p.uptime_seconds)],
    ['Memory', `${fmtBytes(p.memory_bytes)} (peak ${fmtBytes(p.memory_peak_bytes)})`],
    ['Source', p.source],
    ['Target', p.target],
  ];
  const dl = $('process');
  if (dl.children.length !== facts.length) {
    dl.replaceChildren(...facts.map(([k]) => el('div', {}, el('dt', { textContent: k }), el('dd'))));
  }
  facts.forEach(([, v], i) => setText(dl.children[i].querySelector('dd'), v));
}

function renderMembers(members) {
  const ul = $('members');
  const items = (members || []).map((m) => {
    const ago = (Date.now() - new Date(m.heartbeat_at).getTime()) / 1000;
    const tables = m.tables.length ? `${m.tables.length} table(s): ${m.tables.join(', ')}` : 'standing by';
    return `${m.member}: ${m.live ? 'live' : 'gone'}, ${tables}, heartbeat ${fmtSeconds(Math.max(0, ago))} ago`;
  });
  if (!items.length) items.push('none recorded (demo and run --once do not join the group)');
  while (ul.children.length > items.length) ul.lastChild.remove();
  while (ul.children.length < items.length) ul.append(el('li'));
  items.forEach((text, i) => setText(ul.children[i], text));
}

function showProblem(text) {
  const p = $('problem');
  p.hidden = !text;
  setText(p, text || '');
}

function render(data) {
  renderProcess(data.process, data.pipeline);
  const me = data.process ? data.process.member : null;
  const tables = data.tables || [];
  const counts = {};
  const order = [];
  for (const t of tables) {
    const label = renderTable(t, me, data.process ? data.process.capture : null);
    counts[label] = (counts[label] || 0) + 1;
    order.push([label === 'stopped' ? 0 : 1, cards.get(t.table).article]);
  }
  // Stopped tables first; the others in the configuration's order.
  const box = $('tables');
  const wanted = order.sort((a, b) => a[0] - b[0]).map(([, a]) => a);
  if (wanted.some((a, i) => box.children[i] !== a) || box.children.length !== wanted.length) {
    box.replaceChildren(...wanted);
  }
  for (const [name, c] of cards) {
    if (!tables.some((t) => t.table === name)) cards.delete(name);
  }
  const parts = Object.entries(counts).map(([k, n]) => `${n} ${k}`);
  setText($('summary'), tables.length ? `${tables.length} table(s): ${parts.join(', ')}.` : 'No table has a stored state yet.');
  renderMembers(data.members);
  const problems = [];
  if (data.source_error) problems.push(`The source cannot be read: ${data.source_error}`);
  showProblem(problems.join('\n'));
}

async function refresh() {
  const started = Date.now();
  let next = REFRESH_MS;
  try {
    const r = await fetch('/status', { cache: 'no-store' });
    const data = await r.json();
    if (r.ok) {
      render(data);
    } else {
      // The stored state cannot be read; the tables as this process knows them live.
      if (data.tables) render(data);
      else renderProcess(data.process, null);
      showProblem(`The status cannot be read: ${data.error || r.status}`);
    }
    // A slow answer (many tables, busy servers): ask less often, at most a fifth of the time.
    next = Math.max(REFRESH_MS, 5 * (Date.now() - started));
    setText($('updated'), `Updated ${new Date().toLocaleTimeString()}; refreshes every ${Math.round(next / 1000)} s.`);
  } catch (e) {
    showProblem(`sluice does not answer (${e.message}): is the process running?`);
  } finally {
    setTimeout(refresh, next);
  }
}

refresh();
