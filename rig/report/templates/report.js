// rig report: renders the overview grid, the filters and the case list from the embedded JSON (#rig-data).
// Cases are rendered in chunks as the list scrolls into view, so a 2000-case page opens at once.
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('rig-data').textContent);
  performance.mark('rig-parsed');
  var F = {};
  D.fields.forEach(function (f, i) { F[f] = i; });
  // cases rendered per chunk (?chunk=N in the address overrides it)
  var CHUNK = Math.max(1, +new URLSearchParams(location.search).get('chunk') || 16);
  var state = { list: [], rendered: 0 };
  var byId = new Map();
  D.cases.forEach(function (c) { byId.set(c[F.id], c); });

  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (k === 'text') e.textContent = attrs[k];
        else if (k === 'cls') e.className = attrs[k];
        else e.setAttribute(k, attrs[k]);
      }
    }
    for (var i = 2; i < arguments.length; i++) {
      var kid = arguments[i];
      if (kid == null) continue;
      e.appendChild(typeof kid === 'string' ? document.createTextNode(kid) : kid);
    }
    return e;
  }
  function vcls(vi) { return 'v-' + (vi < 5 ? D.verdicts[vi] : 'other'); }
  function ccls(ci) { return 'c' + Math.min(ci, 7); }
  function regLabel(key) { var p = key.split('.'); return p[0] + '.' + p[1] + '.' + p[2].toUpperCase(); }

  // ---------------------------------------------------------------- filters
  var form = document.getElementById('filters');
  function checked(name) {
    var out = new Set();
    form.querySelectorAll('input[name="' + name + '"]').forEach(function (i) { if (i.checked) out.add(+i.value); });
    return out;
  }
  function matcher() {
    var vs = checked('verdict'), cs = checked('class');
    var none = form.querySelector('input[name="class-none"]').checked;
    var model = form.querySelector('select[name="model"]').value;
    var feat = form.querySelector('input[name="feature"]').value.trim().toLowerCase();
    var featIx = new Set();
    if (feat) D.feats.forEach(function (n, i) { if (n.toLowerCase().indexOf(feat) >= 0) featIx.add(i); });
    var onlyNew = form.querySelector('input[name="new"]').checked;
    var cmask = 0;
    cs.forEach(function (c) { cmask |= 1 << c; });
    return function (c) {
      if (!vs.has(c[F.verdict])) return false;
      if (c[F.classes] ? !(c[F.classes] & cmask) : !none) return false;
      if (model !== '' && c[F.model] !== +model) return false;
      if (feat && !c[F.features].some(function (i) { return featIx.has(i); })) return false;
      if (onlyNew && !c[F['new']]) return false;
      return true;
    };
  }

  // ---------------------------------------------------------------- overview grid
  var cells = new Map();  // case id -> td
  var ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  function esc(x) { return String(x).replace(/[&<>"']/g, function (ch) { return ESC[ch]; }); }

  // built as one HTML string: thousands of cells are parsed far faster than created one by one
  function buildOverview() {
    var spans = [];  // [label, columns]
    var h2 = '<tr><th></th>';
    D.cols.forEach(function (cv) {
      if (!spans.length || spans[spans.length - 1][0] !== cv[0]) spans.push([cv[0], 0]);
      spans[spans.length - 1][1] += 1;
      h2 += '<th title="' + esc(cv[0] + ': ' + cv[1]) + '"><span>' + esc(cv[1]) + '</span></th>';
    });
    var h1 = '<tr><th></th>' + spans.map(function (sp) {
      return '<th class="combo" colspan="' + sp[1] + '" title="' + esc(sp[0]) + '"><span>' + esc(sp[0]) + '</span></th>';
    }).join('') + '</tr>';
    var at = new Map();
    D.cases.forEach(function (c) {
      var k = c[F.model] * D.cols.length + c[F.col];
      if (!at.has(k)) at.set(k, []);
      at.get(k).push(c);
    });
    var body = [], order = [];
    D.models.forEach(function (m, mi) {
      var row = '<tr><th>' + esc(m) + '</th>';
      for (var ci = 0; ci < D.cols.length; ci++) {
        var cs = at.get(mi * D.cols.length + ci);
        if (!cs) { row += '<td></td>'; continue; }
        cs.sort(function (a, b) { return a[F.verdict] - b[F.verdict]; });
        var c = cs[0];
        var tip = cs.map(function (x) {
          return x[F.id] + ': ' + D.verdicts[x[F.verdict]] + (x[F.findings] ? ' (' + x[F.findings] + ' differing bits)' : '') +
            (x[F['new']] ? (x[F['new']] === 2 ? ' NEW case failing' : ' NEW failure') : '');
        }).join('\n');
        row += '<td class="cell ' + vcls(c[F.verdict]) + (c[F['new']] ? ' new' : '') + '" data-case="' + esc(c[F.id]) +
          '"><a href="#c-' + esc(c[F.id]) + '" title="' + esc(tip) + '"></a></td>';
        order.push(cs);
      }
      body.push(row + '</tr>');
    });
    var host = document.getElementById('grid');
    host.innerHTML = '<table class="ov-grid" id="ov-grid"><thead>' + h1 + h2 + '</tr></thead><tbody>' + body.join('') +
      '</tbody></table>';
    host.querySelectorAll('td.cell').forEach(function (td, i) {
      order[i].forEach(function (x) { cells.set(x[F.id], td); });
    });
    // a combination's label fits over its columns: widen the columns of narrow combinations
    var heads = host.querySelectorAll('thead tr:nth-child(2) th'), k = 1;
    host.querySelectorAll('th.combo').forEach(function (th) {
      if (th.colSpan * 14 > th.textContent.length * 8 + 6) { k += th.colSpan; return; }  // fits: no layout needed
      var need = Math.ceil((th.firstChild.scrollWidth + 6) / th.colSpan);
      for (var i = 0; i < th.colSpan; i++, k++) if (need > 14) heads[k].style.minWidth = need + 'px';
    });
  }

  // ---------------------------------------------------------------- one case
  function fmtBit(v) { return v === null || v === undefined ? '-' : String(v); }

  function bitGrid(key, rows, findings) {
    var names = D.names[key] || [];
    var byBit = {};
    findings.forEach(function (f) { if (f[0] === key) (byBit[f[1]] = byBit[f[1]] || []).push(f); });
    // views compare within their group: the guest's (predicted, configured, observed per mode, the kernel's
    // flags), KVM's (model vs measured), QMP's filtered features (model vs QMP); a group's reference is QEMU's side
    var GROUP = { KVM: 'kvm', filtered: 'filtered' }, REF = { guest: 'configured', kvm: 'KVM measured', filtered: 'filtered (QMP)' };
    var vals = rows.map(function (r) {
      return { label: r[0], v: parseInt(r[1], 16) >>> 0, m: r[2] === null ? 0xffffffff : parseInt(r[2], 16) >>> 0,
        g: GROUP[r[0].split(' ')[0]] || 'guest' };
    });
    var refs = {};
    vals.forEach(function (x) { if (!refs[x.g]) refs[x.g] = x; });
    vals.forEach(function (x) { if (x.label === REF[x.g]) refs[x.g] = x; });
    var head = '<tr><th></th>';
    for (var b = 31; b >= 0; b--) {
      head += '<th>' + (b % 4 === 0 || b === 31 ? b : '') + '</th>' + (b % 8 === 0 && b ? '<th class="gap"></th>' : '');
    }
    var cols = [];
    for (b = 31; b >= 0; b--) {
      var known = vals.filter(function (x) { return (x.m >>> b) & 1; });
      var odd = new Set();
      known.forEach(function (x) {
        var r = refs[x.g];
        if (((r.m >>> b) & 1) && ((x.v >>> b) & 1) !== ((r.v >>> b) & 1)) { odd.add(x); odd.add(r); }
      });
      var fs = byBit[b] || [];
      var name = names[b] || '';
      var tip = regLabel(key) + '[' + b + ']' + (name ? ' ' + name : ' (no feature name)');
      known.forEach(function (x) { tip += '\n  ' + x.label + ': ' + ((x.v >>> b) & 1); });
      fs.forEach(function (f) {
        tip += '\n' + D.classes[f[4]] + (f[5] !== D.classes[f[4]] ? ' (layer ' + f[5] + ')' : '') + ', view ' + f[3] +
          (f[9] !== null ? ', known issue ' + D.issues[f[9]][0] : '');
      });
      if (!fs.length && odd.size) tip += '\nviews differ, no finding (a runtime bit or an informational view)';
      cols.push({ b: b, fs: fs, odd: odd, tip: ' title="' + esc(tip) + '"',
        dc: fs.length ? ' data-class="' + esc(D.classes[fs[0][4]]) + '"' : '' });
    }
    var html = '<table class="bits" data-reg="' + esc(key) + '"><caption>' + esc(regLabel(key)) + '</caption><thead>' +
      head + '</tr></thead><tbody>';
    vals.forEach(function (x) {
      html += '<tr><th>' + esc(x.label) + '</th>';
      cols.forEach(function (c) {
        var b = c.b;
        if (!((x.m >>> b) & 1)) html += '<td class="n"' + c.tip + '></td>';
        else {
          var v = (x.v >>> b) & 1;
          var cl = v ? 'k1' : 'k0';
          if (c.fs.length) cl = 'fc ' + ccls(c.fs[0][4]);
          else if (c.odd.size) cl = 'fc cnf';
          if (c.odd.has(x)) cl += ' odd';
          html += '<td class="' + cl + '"' + c.tip + c.dc + '>' + v + '</td>';
        }
        if (b % 8 === 0 && b) html += '<td class="gap"></td>';
      });
      html += '</tr>';
    });
    return html + '</tbody></table>';
  }

  function findingsTable(d, noteNo) {
    var modes = [];
    d.f.forEach(function (f) { Object.keys(f[8]).forEach(function (m) { if (modes.indexOf(m) < 0) modes.push(m); }); });
    modes.sort();
    var head = el('tr');
    ['bit', 'feature', 'view', 'predicted', 'configured'].concat(modes.map(function (m) { return 'observed ' + m; }))
      .concat(['class', 'layer', 'known issue', 'note']).forEach(function (h) { head.appendChild(el('th', { text: h })); });
    var t = el('table', { cls: 'ft' }, head);
    d.f.forEach(function (f) {
      var tr = el('tr', null, el('td', null, el('code', { text: regLabel(f[0]).replace(/\.(\w+)$/, '.$1') + '[' + f[1] + ']' })),
        el('td', { text: f[2] }), el('td', { text: f[3] }), el('td', { text: fmtBit(f[6]) }), el('td', { text: fmtBit(f[7]) }));
      modes.forEach(function (m) { tr.appendChild(el('td', { text: fmtBit(f[8][m]) })); });
      tr.appendChild(el('td', null, el('span', { cls: 'sw c ' + ccls(f[4]) }), D.classes[f[4]]));
      tr.appendChild(el('td', { text: f[5] }));
      var iss = f[9] !== null ? D.issues[f[9]] : null;
      tr.appendChild(el('td', null, iss ? el('a', { href: iss[2], title: iss[1], text: iss[0] }) : null));
      tr.appendChild(el('td', { text: f[10] !== null ? (noteNo[f[10]] === 'host quirk' ? 'host quirk' : '[' + noteNo[f[10]] + ']') : '' }));
      t.appendChild(tr);
    });
    return t;
  }

  function caseCard(c) {
    var id = c[F.id], vi = c[F.verdict], d = D.details[id];
    var title = el('h3', null, el('span', { cls: 'badge', text: D.verdicts[vi] }), el('code', { text: id }),
      c[F['new']] ? el('span', { cls: 'newmark', text: c[F['new']] === 2 ? 'new case, failing' : 'new failure' }) : null,
      ' ', el('span', { cls: 'sub', text: '-cpu ' + c[F.cpu] + ' · ' + c[F.outcome] + ' · ' + c[F.findings] +
        ' differing bits · ' + c[F.duration_s] + ' s · ' + c[F.artifacts] }));
    if (!d && c[F.chunk] >= 0) {  // its details are in a chunk beside the page: a placeholder until it loads
      loadChunk(c[F.chunk]);
      return el('article', { cls: 'case pending ' + vcls(vi), id: 'c-' + id, 'data-chunk': c[F.chunk] }, title,
        el('p', { cls: 'sub', text: 'loading its details from ' + D.chunkDir + '/' + c[F.chunk] + '.js …' }));
    }
    if (!d) return el('div', { cls: 'case line ' + vcls(vi), id: 'c-' + id }, title);
    var card = el('article', { cls: 'case ' + vcls(vi), id: 'c-' + id }, title);
    var regs = el('div', { cls: 'regs' });
    regs.innerHTML = d.grid.map(function (g) { return bitGrid(g[0], g[1], d.f); }).join('');
    if (d.grid.length) card.appendChild(regs);
    if (d.u) card.appendChild(el.apply(null, ['ul', { cls: 'unexp' }].concat(d.u.map(function (u) { return el('li', { text: u }); }))));
    if (d.m) card.appendChild(el('p', { cls: 'sub', text: d.m }));
    // notes: each once; the one that is the case's host quirk is the quirk's paragraph
    var noteNo = {}, order = [], counts = {};
    d.f.forEach(function (f) {
      if (f[10] === null) return;
      counts[f[10]] = (counts[f[10]] || 0) + 1;
      if (f[10] in noteNo) return;
      if (D.notes[f[10]] === d.q) { noteNo[f[10]] = 'host quirk'; return; }
      order.push(f[10]);
      noteNo[f[10]] = order.length;
    });
    var quirkBits = 0;
    for (var n in noteNo) if (noteNo[n] === 'host quirk') quirkBits = counts[n];
    if (d.q) card.appendChild(el('p', { cls: 'quirk' }, el('b', { text: 'Host quirk' + (quirkBits ? ' (' + quirkBits + ' bits): ' : ': ') }), d.q));
    if (d.oi !== undefined) {
      var oi = D.issues[d.oi];
      card.appendChild(el('p', null, 'Known outcome: ', el('a', { href: oi[2], text: oi[0] }), ' ' + oi[1]));
    }
    var iss = [];
    d.f.forEach(function (f) { if (f[9] !== null && iss.indexOf(f[9]) < 0) iss.push(f[9]); });
    if (iss.length) {
      card.appendChild(el.apply(null, ['ul', { cls: 'issues' }].concat(iss.map(function (i) {
        var x = D.issues[i];
        return el('li', null, 'Known issue ', el('a', { href: x[2], text: x[0] }), ': ' + x[1]);
      }))));
    }
    if (order.length) {
      card.appendChild(el.apply(null, ['ol', { cls: 'notes' }].concat(order.map(function (n) {
        return el('li', null, counts[n] > 1 ? el('b', { text: '(' + counts[n] + ' bits) ' }) : null, D.notes[n]);
      }))));
    }
    if (d.f.length) {
      var det = el('details', { cls: 'fl' }, el('summary', { text: d.f.length + ' differing bits, one per row' }));
      var filled = false;
      det.addEventListener('toggle', function () { if (!filled) { filled = true; det.appendChild(findingsTable(d, noteNo)); } });
      card.appendChild(det);
    }
    return card;
  }

  // ---------------------------------------------------------------- details kept beside the page
  var chunkState = {};
  function loadChunk(n) {
    if (chunkState[n]) return;
    chunkState[n] = 'loading';
    var s = document.createElement('script');
    s.src = D.chunkDir + '/' + n + '.js';
    s.onerror = function () {
      chunkState[n] = 'missing';
      document.querySelectorAll('.case.pending[data-chunk="' + n + '"] p').forEach(function (p) {
        p.textContent = 'details missing: ' + D.chunkDir + '/' + n + '.js was not found beside this page';
      });
    };
    document.head.appendChild(s);
  }
  window.rigDetails = function (n, details) {
    chunkState[n] = 'loaded';
    for (var id in details) D.details[id] = details[id];
    document.querySelectorAll('.case.pending[data-chunk="' + n + '"]').forEach(function (e) {
      e.replaceWith(caseCard(byId.get(e.id.slice(2))));
    });
  };

  // ---------------------------------------------------------------- the list, in chunks
  var list = document.getElementById('list'), more = document.getElementById('more');
  function renderMore(upto) {
    var end = Math.min(state.list.length, Math.max(upto || 0, state.rendered + CHUNK));
    var frag = document.createDocumentFragment();
    for (var i = state.rendered; i < end; i++) frag.appendChild(caseCard(state.list[i]));
    list.appendChild(frag);
    state.rendered = end;
    more.textContent = end < state.list.length ? (state.list.length - end) + ' more cases: scroll to load' : '';
  }
  function apply() {
    var m = matcher();
    state.list = D.cases.filter(m).sort(function (a, b) {
      return a[F.verdict] - b[F.verdict] || (b[F['new']] - a[F['new']]) || (a[F.id] < b[F.id] ? -1 : 1);
    });
    var shown = new Set(state.list.map(function (c) { return c[F.id]; }));
    var lit = new Set();
    cells.forEach(function (td, id) { if (shown.has(id)) lit.add(td); });
    cells.forEach(function (td) { td.classList.toggle('dim', !lit.has(td)); });
    list.textContent = '';
    state.rendered = 0;
    renderMore();
    document.getElementById('shown').textContent = state.list.length + ' of ' + D.cases.length + ' cases shown';
  }
  function reveal(id) {
    var c = byId.get(id);
    if (!c) return;
    var ix = state.list.indexOf(c);
    if (ix < 0) {
      form.reset();
      apply();
      ix = state.list.indexOf(c);
    }
    if (ix >= state.rendered) renderMore(ix + 1);
    var e = document.getElementById('c-' + id);
    if (e) {
      e.scrollIntoView({ block: 'start' });
      e.classList.add('flash');
      setTimeout(function () { e.classList.remove('flash'); }, 1500);
    }
  }
  function onHash() {
    var h = decodeURIComponent(location.hash.slice(1));
    if (h.indexOf('c-') === 0) reveal(h.slice(2));
  }

  buildOverview();
  performance.mark('rig-overview');
  form.addEventListener('input', apply);
  form.addEventListener('change', apply);
  form.addEventListener('reset', function () { setTimeout(apply, 0); });
  form.addEventListener('submit', function (e) { e.preventDefault(); });
  apply();
  performance.mark('rig-list');
  if ('IntersectionObserver' in window) {
    new IntersectionObserver(function (es) {
      if (es.some(function (x) { return x.isIntersecting; }) && state.rendered < state.list.length) renderMore();
    }, { rootMargin: '600px' }).observe(more);
  }
  more.addEventListener('click', function () { renderMore(); });
  window.addEventListener('hashchange', onHash);
  onHash();
  document.documentElement.setAttribute('data-ready', '1');
})();
