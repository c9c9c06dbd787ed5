'use strict';
// vtk view. Every node is built with createElement and textContent, never innerHTML, so a
// caption or manifest field shows as text whatever it holds. Served, rows come from /api
// (vtk/view/server.py); in a static export data.js sets window.VTK_DATA and the same
// queries run here (localQuery mirrors ShardSetView.query in vtk/view/index.py).
(function () {
  const DATA = window.VTK_DATA || null;
  const $ = (id) => document.getElementById(id);
  const state = { offset: 0, limit: 24, q: '', label: '', sort: '', order: 'desc', total: 0 };
  const failState = { reason: '', offset: 0 };

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const num = (x) => typeof x === 'number' && isFinite(x);
  const fmt = (x, d) => (num(x) ? x.toFixed(d) : String(x ?? ''));
  const plain = (x) => (typeof x === 'object' && x !== null ? JSON.stringify(x) : String(x));

  async function api(name, params) {
    const r = await fetch('api/' + name + '?' + new URLSearchParams(params));
    if (!r.ok) throw new Error(name + ': HTTP ' + r.status + ' ' + (await r.text()));
    return r.json();
  }

  function searchText(it) {
    const c = (it.captions && typeof it.captions === 'object') ? it.captions : {};
    let parts = [c.coarse, c.fine, c.fused, it.caption];
    if (Array.isArray(c.frames)) parts = parts.concat(c.frames.map((f) => f && f.text));
    if (Array.isArray(it.texts)) parts = parts.concat(it.texts);
    return [...new Set(parts.filter((p) => typeof p === 'string' && p))].join('\n').toLowerCase();
  }

  function localQuery(s) {
    const words = s.q.toLowerCase().split(/\s+/).filter(Boolean);
    const label = s.label.trim().toLowerCase();
    let rows = DATA.clips;
    if (words.length || label || s.sort) {
      rows = rows.filter((r) => !r.error && words.every((w) => searchText(r).includes(w)) &&
        (!label || String(r.label ?? '').toLowerCase() === label));
      if (s.sort) {
        const sign = s.order === 'asc' ? 1 : -1;
        const score = (r) => (r.scores && num(r.scores[s.sort]) ? r.scores[s.sort] : null);
        rows = rows.map((r, i) => [r, i, score(r)]).sort((a, b) =>
          (a[2] === null) - (b[2] === null) || (a[2] !== null && b[2] !== null ?
            sign * (a[2] - b[2]) : 0) || a[1] - b[1]).map((p) => p[0]);
      }
    }
    return { total: rows.length, offset: s.offset, items: rows.slice(s.offset, s.offset + s.limit),
      labels: DATA.labels || [], scores: DATA.scores || [] };
  }

  // --- one clip --------------------------------------------------------------------------

  function timeline(it, video) {
    const frames = (Array.isArray((it.captions || {}).frames) ? it.captions.frames : [])
      .filter((f) => f && num(f.t) && typeof f.text === 'string');
    const box = el('div', 'timeline');
    if (!frames.length) return box;
    const dur = num(it.end) && num(it.start) && it.end > it.start ? it.end - it.start
      : (it.num_frames && it.fps ? it.num_frames / it.fps : frames[frames.length - 1].t + 0.5);
    const runs = [];  // consecutive frames with one caption share a segment
    for (const f of frames) {
      if (runs.length && runs[runs.length - 1].text === f.text) continue;
      runs.push({ t: runs.length ? f.t : 0, text: f.text });
    }
    const bar = el('div', 'bar');
    const head = el('div', 'playhead');
    const now = el('div', 'frame-text', runs[0].text);
    const segs = runs.map((r, k) => {
      const end = k + 1 < runs.length ? runs[k + 1].t : dur;
      const seg = el('button', 'seg');
      seg.type = 'button';
      seg.title = fmt(r.t, 2) + ' s: ' + r.text;
      seg.style.width = (100 * Math.max(0, end - r.t) / dur) + '%';
      seg.addEventListener('click', () => { video.currentTime = Math.min(r.t + 0.01, dur); });
      bar.append(seg);
      return seg;
    });
    bar.append(head);
    segs[0].classList.add('on');
    video.addEventListener('timeupdate', () => {
      const t = video.currentTime;
      head.style.left = Math.min(100, 100 * t / dur) + '%';
      let k = 0;
      while (k + 1 < runs.length && runs[k + 1].t <= t) k++;
      segs.forEach((s, i) => s.classList.toggle('on', i === k));
      now.textContent = runs[k].text;
    });
    const n = frames.length;
    box.append(bar, now, el('div', 'frames-note', n + ' frame caption' + (n > 1 ? 's' : '')));
    return box;
  }

  function facts(pairs) {
    const dl = el('dl', 'facts');
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === '') continue;
      dl.append(el('dt', null, k), el('dd', null, v));
    }
    return dl;
  }

  function clipCard(it) {
    const card = el('article', 'clip');
    card.dataset.key = it.key ?? '';
    if (it.error && !it.mp4) {
      card.classList.add('error');
      card.append(el('div', 'err-title', 'unreadable'), el('p', 'err', it.error),
        facts([['shard', it.shard], ['key', it.key]]));
      return card;
    }
    const v = document.createElement('video');
    v.muted = true;
    v.loop = true;
    v.playsInline = true;
    v.preload = 'metadata';
    if (it.poster) v.poster = it.poster;
    v.src = it.mp4;
    if (num(it.width) && num(it.height) && it.height > 0) v.style.aspectRatio = it.width + ' / ' + it.height;
    v.addEventListener('mouseenter', () => { v.play().catch(() => {}); });
    v.addEventListener('mouseleave', () => { v.pause(); });
    card.append(v, timeline(it, v));

    const caps = (it.captions && typeof it.captions === 'object') ? it.captions : {};
    const dl = el('dl', 'captions');
    for (const k of ['coarse', 'fine', 'fused', 'vlm']) {
      if (caps[k]) dl.append(el('dt', null, k), el('dd', 'cap-' + k, caps[k]));
    }
    const failed = it.caption_errors && typeof it.caption_errors === 'object' ? it.caption_errors : {};
    for (const [k, why] of Object.entries(failed)) {
      dl.append(el('dt', null, k), el('dd', 'err cap-failed', 'failed: ' + plain(why)));
    }
    // a column per caption layer (vtk caption --as NAME)
    for (const [name, l] of Object.entries(it.layers && typeof it.layers === 'object' ? it.layers : {})) {
      const text = l && l.text ? plain(l.text) : '';
      dl.append(el('dt', 'layer', name), el('dd', 'cap-layer' + (text ? '' : ' err'),
        text || 'failed: ' + plain((l && l.error) || '')));
    }
    if (it.caption) dl.append(el('dt', null, 'source'), el('dd', 'cap-source', it.caption));
    if (Array.isArray(it.texts) && it.texts.length) {
      dl.append(el('dt', null, 'queries'), el('dd', 'cap-texts', it.texts.map(plain).join(' | ')));
    }
    card.append(dl);

    const tags = el('div', 'tags');
    if (it.label !== undefined && it.label !== null) tags.append(el('span', 'tag label', plain(it.label)));
    for (const [k, s] of Object.entries(it.scores && typeof it.scores === 'object' ? it.scores : {})) {
      tags.append(el('span', 'tag score', k + ' ' + (num(s) ? fmt(s, 3) : plain(s))));
    }
    if (tags.childElementCount) card.append(tags);
    const extra = Object.entries(it.extra && typeof it.extra === 'object' ? it.extra : {});
    card.append(facts([
      ['key', it.key],
      ['source', it.source],
      ['time', fmt(it.start, 2) + '–' + fmt(it.end, 2) + ' s'],
      ['video', [it.num_frames && it.num_frames + ' frames', it.fps && it.fps + ' fps',
        it.width && it.width + '×' + it.height, it.codec].filter(Boolean).join(', ')],
      ['shard', it.shard + ' #' + it.row],
    ].concat(extra.map(([k, x]) => [k, plain(x)]))));
    if (it.error) card.append(el('p', 'err', it.error));
    return card;
  }

  // --- the grid ---------------------------------------------------------------------------

  function options(select, values, keep) {
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of values) {
      if (have.has(v)) continue;
      const o = el('option', null, v);
      o.value = v;
      select.append(o);
    }
    if (keep !== undefined) select.value = keep;
  }

  let ticket = 0;
  async function refresh() {
    const mine = ++ticket;  // a slower earlier answer must not overwrite a newer one
    const grid = $('grid');
    grid.classList.add('busy');
    let page;
    try {
      page = DATA ? localQuery(state) : await api('clips', {
        offset: state.offset, limit: state.limit, q: state.q, label: state.label,
        sort: state.sort, order: state.order });
    } catch (e) {
      page = { total: 0, offset: 0, items: [{ error: String(e) }], labels: [], scores: [] };
    }
    if (mine !== ticket) return;
    grid.classList.remove('busy');
    state.total = page.total;
    grid.replaceChildren(...page.items.map(clipCard));
    if (!page.items.length) grid.append(el('p', 'empty', 'no clips match'));
    const first = page.items.length ? state.offset + 1 : 0;
    $('range').textContent = first + '–' + (state.offset + page.items.length) + ' of ' + page.total;
    $('prev').disabled = state.offset <= 0;
    $('next').disabled = state.offset + state.limit >= page.total;
    options($('sort'), page.scores || [], state.sort);
    const labels = $('labels');
    const known = new Set([...labels.options].map((o) => o.value));
    for (const l of page.labels || []) if (!known.has(l)) { const o = el('option'); o.value = l; labels.append(o); }
  }

  // --- side panels ------------------------------------------------------------------------

  function renderCard(s) {
    const c = s.card || {};
    const mb = num(c.num_bytes) ? (c.num_bytes / 1e6).toFixed(1) + ' MB' : '';
    const clips = c.clips && typeof c.clips === 'object' ? c.clips : {};
    const caps = c.captions && typeof c.captions === 'object' ? c.captions : {};
    const fails = c.failures && typeof c.failures === 'object' ? c.failures : {};
    $('title').textContent = s.folder || '';
    document.title = 'vtk view: ' + (s.folder || '');
    const box = $('card');
    box.replaceChildren(facts([
      ['shard file prefix', c.name],  // index.json's name: the tars' prefix, not a title
      ['samples', c.num_samples ?? ''],
      ['rows', s.total !== c.num_samples ? s.total + ' (error rows included)' : ''],
      ['shards', (s.shards || []).length + (mb ? ', ' + mb : '')],
      ['clips', [clips.mode, clips.fps && clips.fps + ' fps', clips.size && clips.size + ' px', c.codec].filter(Boolean).join(', ')],
      ['captions', Object.entries(caps).filter(([, v]) => v).map(([k, v]) => k + '=' + plain(v)).join(', ')],
      // a video captioner's clips, failures (clips kept without that caption) and truncations
      ['video captioners', Object.entries((c.last_run && c.last_run.captioners) || {}).map(([m, x]) =>
        m + ': ' + x.clips + ' clips, ' + x.failures + ' failed, ' + x.truncated + ' truncated (last run)').join(' | ')],
      ['caption layers', (s.layers || []).map((l) => l.name + ' (' + [(l.models || []).join(', '),
        l.prompt_sha && l.prompt_sha.length ? 'prompt ' + l.prompt_sha.join(', ') : '',
        (l.samples ?? '?') + ' clips', (l.failures ?? 0) + ' failed'].filter(Boolean).join('; ') + ')').join(' | ')],
      ['failures', fails.total === undefined ? '' : fails.total + (fails.total ? ' (' +
        Object.entries(fails.by_reason || {}).map(([k, n]) => k + ' ' + n).join(', ') + ')' : '')],
      ['created', c.created],
      ['command', c.command],
    ]));
    if (s.card_problem) box.append(el('p', 'err', s.card_problem));
    for (const sh of s.shards || []) if (sh.problem) box.append(el('p', 'err', sh.problem));
    const more = el('details');
    more.append(el('summary', null, 'index.json'), el('pre', null, JSON.stringify(c, null, 2)));
    box.append(more);
    const counts = fails.by_reason && typeof fails.by_reason === 'object' ? fails.by_reason : {};
    const reason = $('reason');
    reason.replaceChildren(el('option', null, 'every reason (' + (fails.total ?? 0) + ')'));
    reason.options[0].value = '';
    for (const [k, n] of Object.entries(counts)) {
      const o = el('option', null, k + ' (' + n + ')');
      o.value = k;
      reason.append(o);
    }
  }

  async function loadFailures(append) {
    let page;
    if (DATA) {
      const rows = (DATA.failures || []).filter((r) => !failState.reason || r.kind === failState.reason);
      page = { total: rows.length, items: rows.slice(failState.offset, failState.offset + 100) };
    } else {
      page = await api('failures', { reason: failState.reason, offset: failState.offset, limit: 100 });
    }
    const list = $('failures');
    if (!append) list.replaceChildren();
    for (const r of page.items) {
      const li = el('li');
      li.append(el('span', 'tag reason', r.kind), el('span', 'input', r.input || r.source),
        el('div', 'why', r.reason));
      if (r.key) li.append(el('div', 'fkey', 'clip ' + r.key));
      list.append(li);
    }
    if (!page.total) list.append(el('li', 'empty', 'none'));
    failState.offset += page.items.length;
    $('more-failures').hidden = failState.offset >= page.total;
  }

  // --- controls ---------------------------------------------------------------------------

  let typing;
  function changed() {
    state.q = $('q').value;
    state.label = $('label').value;
    state.sort = $('sort').value;
    state.order = $('order').value;
    state.limit = parseInt($('limit').value, 10) || 24;
    state.offset = 0;
    refresh();
  }
  $('filters').addEventListener('submit', (e) => { e.preventDefault(); changed(); });
  $('q').addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(changed, 250); });
  $('label').addEventListener('change', changed);
  for (const id of ['sort', 'order', 'limit']) $(id).addEventListener('change', changed);
  $('prev').addEventListener('click', () => { state.offset = Math.max(0, state.offset - state.limit); refresh(); });
  $('next').addEventListener('click', () => { state.offset += state.limit; refresh(); });
  $('reason').addEventListener('change', () => {
    failState.reason = $('reason').value;
    failState.offset = 0;
    loadFailures(false);
  });
  $('more-failures').addEventListener('click', () => loadFailures(true));

  (async function start() {
    refresh();
    try {
      renderCard(DATA ? DATA.summary : await api('card', {}));
      await loadFailures(false);
    } catch (e) {
      $('card').replaceChildren(el('p', 'err', String(e)));
    }
  })();
})();
