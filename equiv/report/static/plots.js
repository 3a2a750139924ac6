/* equiv parity report: the plots, drawn with uPlot (inlined above) from the page's plot data
   (#equiv-plot-data, written by equiv/report/plotdata.py). A plot is drawn when it comes into
   view (a cell's when its details are opened): drawing every cell of a full run at load would
   cost seconds, for plots a reader opens a few of.
   Drawing a plot moves nothing on the page: the page keeps a box for each panel (.plot-panel,
   written by the template, sized by report.css), and a plot is drawn into its box, its plotting
   area made shorter where its legend needs more room than the box has. A plot comes in late
   (the data is unpacked asynchronously, late on a loaded machine), so a page that grew as its
   plots came in would move what a reader was about to click, the summary of the next cell
   included, and the click would open nothing. */
(function () {
  "use strict";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f"];
  var RED = "#c62828";
  var BLUE = "#1565c0";
  var UNKNOWN = "#bbbbbb";
  /* integer steps on the x axis */
  var STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000];
  var unpacked = null;

  /* Every cell's plot data (a promise), unpacked from the page on the first draw: gzip'd JSON
     in base64, which the browser's DecompressionStream inflates (no network, no library). */
  function plotData() {
    if (unpacked === null) {
      var node = document.getElementById("equiv-plot-data");
      var text = node ? node.textContent.trim() : "";
      if (!text) {
        unpacked = Promise.resolve({});
      } else if (typeof DecompressionStream === "undefined") {
        unpacked = Promise.reject(new Error("this browser cannot unpack the plot data " +
          "(DecompressionStream: Chrome 80, Firefox 113, Safari 16.4 or later)"));
      } else {
        var binary = atob(text), bytes = new Uint8Array(binary.length);
        for (var i = 0; i < binary.length; i++) { bytes[i] = binary.charCodeAt(i); }
        var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
        unpacked = new Response(stream).json();
      }
    }
    return unpacked;
  }

  function positive(v) { return v != null && v > 0 ? v : null; }

  function fmt(v) {
    if (v == null) { return "—"; }
    if (v === 0) { return "0"; }
    var a = Math.abs(v);
    return a < 1e-3 || a >= 1e4 ? v.toExponential(2) : String(Number(v.toPrecision(3)));
  }

  function fmtTick(v) {
    if (v == null) { return ""; }
    var a = Math.abs(v);
    return a < 1e-2 || a >= 1e4 ? v.toExponential(0) : String(Number(v.toPrecision(2)));
  }

  function value(u, v) { return fmt(v); }

  /* Log-axis ticks: decades (every other one or more over a wide range), with 2 and 5 in
     between over a narrow one; uPlot's default of every 1-9 multiple merges into grey bands. */
  function logSplits(u, axis, min, max) {
    var lo = Math.floor(Math.log10(min)), hi = Math.ceil(Math.log10(max));
    var out = [], every = Math.max(1, Math.ceil((hi - lo) / 6));
    var mults = hi - lo <= 2 ? [1, 2, 5] : [1];
    for (var k = lo; k <= hi; k += every) {
      mults.forEach(function (m) {
        var v = Number((m * Math.pow(10, k)).toPrecision(1));
        if (v >= min * 0.999 && v <= max * 1.001) { out.push(v); }
      });
    }
    return out;
  }

  /* A vertical line at step x, across the plotting area (canvas pixels). */
  function vline(u, x, colour, dash) {
    var px = Math.round(u.valToPos(x, "x", true));
    if (px < u.bbox.left || px > u.bbox.left + u.bbox.width) { return; }
    var ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = colour;
    ctx.lineWidth = uPlot.pxRatio;
    ctx.setLineDash(dash.map(function (d) { return d * uPlot.pxRatio; }));
    ctx.beginPath();
    ctx.moveTo(px, u.bbox.top);
    ctx.lineTo(px, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.restore();
  }

  function panelWidth(host, panels) {
    var room = Math.max(host.clientWidth, 300) - 16 * (panels - 1);
    return Math.max(280, Math.min(460, Math.floor(room / panels)));
  }

  /* The i-th panel box of a host: the one the template wrote, or a new one. */
  function panel(host, i) {
    var boxes = host.querySelectorAll(":scope > .plot-panel");
    if (i < boxes.length) { return boxes[i]; }
    var box = document.createElement("div");
    box.className = "plot-panel";
    host.appendChild(box);
    return box;
  }

  /* The width a plot takes in its box (set by report.css), or `fallback` where the box is not
     laid out (drawn hidden, by a browser without IntersectionObserver). */
  function boxWidth(box, fallback) {
    var w = Math.floor(box.getBoundingClientRect().width);
    return w > 0 ? w : fallback;
  }

  var MIN_PLOT_HEIGHT = 120;

  /* Keeps a box at the height the page gave it before the plot came: where the title, the
     legend and the key need more room than `height` leaves, the plotting area gives it up (down
     to MIN_PLOT_HEIGHT). uPlot sizes its parts in a microtask, so this measures in the next
     one: still before the page is laid out and painted again, so no frame shows the box taller. */
  function fit(u, box, width, height) {
    var room = parseFloat(getComputedStyle(box).minHeight) || 0;
    if (!room) { return; }
    queueMicrotask(function () {
      var over = box.getBoundingClientRect().height - room;
      if (over > 0) {
        u.setSize({ width: width, height: Math.max(MIN_PLOT_HEIGHT, Math.floor(height - over)) });
      }
    });
  }

  function note(host, text) {
    var p = document.createElement("p");
    p.className = "plot-note";
    p.textContent = text;
    host.appendChild(p);
    return p;
  }

  /* One panel per quantity group: each name's error (solid) and tolerance (dashed, same
     colour) on a log axis, red dots beyond tolerance, the first divergence dotted red. */
  function drawErrors(host, d) {
    var fallback = panelWidth(host, d.groups.length);
    var first = d.step[0], last = d.step[d.step.length - 1];
    /* The whole run from step 0, and the first divergence even where a pooled series has no
       point there; a zoom (any other extent) is left as it is. */
    function stepRange(u, min, max) {
      var div = d.div == null ? min : d.div;
      return [min === first ? Math.min(0, div, min) : min, max === last ? Math.max(div, max) : max];
    }
    d.groups.forEach(function (group, g) {
      var columns = [d.step];
      var series = [{ label: "step" }];
      var anyError = false, anyValue = false;
      var single = group.q.length === 1;
      group.q.forEach(function (q, i) {
        var colour = PALETTE[i % PALETTE.length];
        var err = q[1].map(positive), tol = q[2].map(positive);
        anyError = anyError || err.some(function (v) { return v != null; });
        anyValue = anyValue || anyError || tol.some(function (v) { return v != null; });
        columns.push(err, tol);
        series.push(
          { label: single ? "error" : q[0], stroke: colour, width: 1.5, value: value },
          { label: single ? "tolerance" : q[0] + " tol", stroke: colour, width: 1, dash: [5, 3],
            alpha: 0.8, points: { show: false }, value: value });
        if (q[3] && q[3].length) {
          var over = d.step.map(function () { return null; });
          q[3].forEach(function (j) { over[j] = q[1][j]; });
          columns.push(over);
          series.push({ label: (single ? "" : q[0] + " ") + "> tol", stroke: RED, fill: RED,
            paths: function () { return null; }, points: { show: true, size: 5, fill: RED },
            value: value });
        }
      });
      var box = panel(host, g);
      if (!anyValue) {
        note(box, group.title + ": exact match at every step (error 0, tolerance 0)");
        return;
      }
      var width = boxWidth(box, fallback);
      var u = new uPlot({
        title: group.title + (anyError ? "" : ": error exactly 0 at every step"),
        width: width,
        height: 210,
        scales: { x: { time: false, range: stepRange }, y: { distr: 3, log: 10 } },
        axes: [
          { label: "step", labelSize: 18, size: 34, incrs: STEP_INCRS },
          { label: g === 0 ? "max |impl - ref64|" : "", labelSize: g === 0 ? 18 : 0, size: 58,
            splits: logSplits, values: function (u, splits) { return splits.map(fmtTick); } },
        ],
        series: series,
        cursor: { drag: { x: true, y: false } },
        hooks: { draw: [function (u) {
          if (d.div != null) { vline(u, d.div, RED, [2, 3]); }
          if (d.resync != null) { vline(u, d.resync, BLUE, [6, 4]); }
        }] },
      }, columns, box);
      fit(u, box, width, 210);
    });
  }

  /* Two strips, reference above implementation, one colour per branch; black ticks at the
     numerically ambiguous steps, red ticks where the two differ, a dashed red line where the
     comparison stopped. Hovering reads out both branches at a step. */
  function drawBranches(host, b) {
    var steps = [], rows = { ref: [], impl: [] };
    for (var i = 0; i < b.n; i++) { steps.push(i); rows.ref.push(null); rows.impl.push(null); }
    ["ref", "impl"].forEach(function (row) {
      b[row].forEach(function (r) {
        for (var s = r[0]; s < r[0] + r[1]; s++) { rows[row][s] = r[2]; }
      });
    });
    function colour(k) { return b.names[k] === "?" ? UNKNOWN : PALETTE[k % PALETTE.length]; }
    function name(u, v) { return v == null ? "—" : b.names[v]; }
    function strips(u) {
      var ctx = u.ctx, px = uPlot.pxRatio;
      var yOf = function (y) { return u.valToPos(y, "y", true); };
      var xOf = function (x) { return u.valToPos(x, "x", true); };
      ctx.save();
      [["ref", 1], ["impl", 0]].forEach(function (row) {
        b[row[0]].forEach(function (r) {
          var x0 = xOf(r[0] - 0.5), x1 = xOf(r[0] + r[1] - 0.5);
          var y0 = yOf(row[1] + 0.35), y1 = yOf(row[1] - 0.35);
          ctx.fillStyle = colour(r[2]);
          ctx.fillRect(x0, y0, Math.max(x1 - x0, px), y1 - y0);
        });
      });
      function ticks(list, y, style) {
        ctx.strokeStyle = style;
        ctx.lineWidth = 1.5 * px;
        ctx.beginPath();
        list.forEach(function (s) {
          var x = Math.round(xOf(s));
          ctx.moveTo(x, yOf(y + 0.12));
          ctx.lineTo(x, yOf(y - 0.12));
        });
        ctx.stroke();
      }
      ticks(b.ambiguous, 1.55, "#000");
      ticks(b.differ, -0.55, RED);
      ctx.restore();
      if (b.stopped != null) { vline(u, b.stopped - 0.5, RED, [5, 3]); }
    }
    var box = panel(host, 0);
    var width = boxWidth(box, Math.max(Math.min(host.clientWidth, 1000), 300));
    var u = new uPlot({
      width: width,
      height: 150,
      scales: {
        x: { time: false, range: function () { return [-0.5, Math.max(b.n, 1) - 0.5]; } },
        y: { range: [-0.85, 1.85] },
      },
      axes: [
        { label: "step", labelSize: 18, size: 34, incrs: STEP_INCRS },
        { size: 112, splits: function () { return [0, 1]; }, grid: { show: false },
          values: function (u, splits) {
            return splits.map(function (v) { return v === 1 ? "reference" : "implementation"; });
          } },
      ],
      series: [
        { label: "step" },
        { label: "reference", stroke: "#333", paths: function () { return null; },
          points: { show: false }, value: name },
        { label: "implementation", stroke: "#333", paths: function () { return null; },
          points: { show: false }, value: name },
      ],
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      hooks: { draw: [strips] },
    }, [steps, rows.ref, rows.impl], box);
    var key = document.createElement("p");
    key.className = "plot-key";
    b.names.forEach(function (n, k) {
      var item = document.createElement("span");
      var swatch = document.createElement("i");
      swatch.style.background = colour(k);
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(n));
      key.appendChild(item);
    });
    box.appendChild(key);
    fit(u, box, width, 150);
  }

  var DTYPE_COLOURS = { float64: "#1f5fa8", float32: "#d9731a" };

  function fmtSeconds(v) {
    if (v == null) { return "—"; }
    if (v >= 1) { return v.toFixed(2) + " s"; }
    if (v >= 1e-3) { return Number((v * 1e3).toPrecision(3)) + " ms"; }
    return Number((v * 1e6).toPrecision(3)) + " µs";
  }

  /* Step time per (backend, dtype), a row each, on a log axis: a dot at the median (coloured
     by dtype), a whisker from the fastest to the slowest round, a hollow circle at the first
     call. Rows run down the page (uPlot's x scale turned vertical), first row on top. */
  function drawBench(host, b) {
    var n = b.label.length;
    var rows = b.label.map(function (_, i) { return i; });
    function only(dtype) {
      return b.median.map(function (v, i) { return b.dtype[i] === dtype ? v : null; });
    }
    function hidden(label) {
      return { label: label, stroke: "#555", paths: function () { return null; },
        points: { show: false }, value: function (u, v) { return fmtSeconds(v); } };
    }
    function whiskers(u) {
      var ctx = u.ctx, px = uPlot.pxRatio;
      ctx.save();
      ctx.lineWidth = 1.2 * px;
      for (var i = 0; i < n; i++) {
        if (b.min[i] == null || b.max[i] == null) { continue; }
        var y = u.valToPos(i, "x", true);
        var x0 = u.valToPos(b.min[i], "y", true), x1 = u.valToPos(b.max[i], "y", true);
        ctx.strokeStyle = DTYPE_COLOURS[b.dtype[i]] || "#555";
        ctx.globalAlpha = 0.6;
        ctx.beginPath();
        ctx.moveTo(x0, y); ctx.lineTo(x1, y);
        ctx.moveTo(x0, y - 4 * px); ctx.lineTo(x0, y + 4 * px);
        ctx.moveTo(x1, y - 4 * px); ctx.lineTo(x1, y + 4 * px);
        ctx.stroke();
      }
      ctx.restore();
    }
    var series = [{ label: "row", value: function (u, i) { return i == null ? "—" : b.label[i]; } }];
    var columns = [rows];
    Object.keys(DTYPE_COLOURS).forEach(function (dtype) {
      if (b.dtype.indexOf(dtype) < 0) { return; }
      var colour = DTYPE_COLOURS[dtype];
      series.push({ label: "median " + dtype, stroke: colour, paths: function () { return null; },
        points: { show: true, size: 8, fill: colour, stroke: colour },
        value: function (u, v) { return fmtSeconds(v); } });
      columns.push(only(dtype));
    });
    series.push({ label: "first call", stroke: "#444", paths: function () { return null; },
      points: { show: true, size: 7, width: 1.5, fill: "#fff", stroke: "#444" },
      value: function (u, v) { return fmtSeconds(v); } });
    columns.push(b.first);
    series.push(hidden("fastest round"), hidden("slowest round"));
    columns.push(b.min, b.max);
    var box = panel(host, 0);
    var width = boxWidth(box, Math.max(Math.min(host.clientWidth, 760), 360));
    var u = new uPlot({
      width: width,
      height: 18 * n + 70,
      scales: {
        x: { time: false, ori: 1, dir: -1, range: [-0.6, n - 0.4] },
        y: { ori: 0, distr: 3, log: 10 },
      },
      axes: [
        { side: 3, size: 170, splits: function () { return rows; }, grid: { show: false },
          values: function (u, splits) {
            return splits.map(function (i) { return b.label[i] || ""; });
          } },
        { side: 2, label: "seconds per training step (log scale)", labelSize: 18, size: 34,
          splits: logSplits, values: function (u, splits) {
            return splits.map(function (v) {
              return v >= 1 ? Number(v.toPrecision(3)) + " s" : fmtSeconds(v);
            });
          } },
      ],
      series: series,
      cursor: { drag: { x: false, y: false } },
      hooks: { draw: [whiskers] },
    }, columns, box);
    fit(u, box, width, 18 * n + 70);
  }

  var observer = null;

  /* Whether an element is on the page: Chromium hides a closed <details>'s content with
     content-visibility, which leaves it boxes (getClientRects) and an offsetParent. */
  function shown(el) {
    return el.checkVisibility ? el.checkVisibility() : el.getClientRects().length > 0;
  }

  function draw(host) {
    if (host.getAttribute("data-drawn")) { return; }
    host.setAttribute("data-drawn", "pending");
    plotData().then(function (all) {
      /* Its cell was closed (or the report filtered) while the data was unpacked: drawn now,
         it would be drawn at a made-up width, so it waits to be seen again. */
      if (observer && !shown(host)) {
        host.removeAttribute("data-drawn");
        observer.observe(host);
        return;
      }
      var entry = all[host.getAttribute("data-plot-for")] || {};
      var kind = host.getAttribute("data-plot");
      if (kind === "errors" && entry.errors) { drawErrors(host, entry.errors); }
      if (kind === "branches" && entry.branches) { drawBranches(host, entry.branches); }
      if (kind === "bench" && entry.bench) { drawBench(host, entry.bench); }
      host.setAttribute("data-drawn", "1");
    }).catch(function (err) {
      host.setAttribute("data-drawn", "failed");
      note(host, "This plot could not be drawn: " + err.message);
      console.error(err);
    });
  }

  var hosts = Array.prototype.slice.call(document.querySelectorAll(".plot-host[data-plot]"));
  if (typeof uPlot === "undefined") {
    hosts.forEach(function (h) { note(h, "The plotting library did not load."); });
    return;
  }
  if ("IntersectionObserver" in window) {
    observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) { observer.unobserve(e.target); draw(e.target); }
      });
    }, { rootMargin: "300px 0px" });
    hosts.forEach(function (h) { observer.observe(h); });
  } else {
    hosts.forEach(draw);
  }
  /* Printing shows every open cell, so draw them all first. */
  window.addEventListener("beforeprint", function () {
    hosts.forEach(function (h) { if (shown(h)) { draw(h); } });
  });
})();
