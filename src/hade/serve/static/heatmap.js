/* hade search page: word × time heat maps on a canvas (viridis, word labels, seconds axis, colour bar).
   Exposes window.hadeHeatmap.draw(canvas, words, matrix [words][bins], edges [bins + 1] s, audioEnd s). */
"use strict";

window.hadeHeatmap = (() => {
  function fmtNum(v, digits = 3) {
    return Number.isFinite(v) ? v.toFixed(digits) : "–";
  }

  // viridis colour map, linearly interpolated between 9 stops
  const VIRIDIS = ["#440154", "#472c7a", "#3b518b", "#2c718e", "#21908d", "#27ad81", "#5cc863", "#aadc32", "#fde725"]
    .map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));

  function viridis(x) {
    const t = Math.min(1, Math.max(0, x)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t));
    const f = t - i;
    const c = VIRIDIS[i].map((v, j) => Math.round(v + f * (VIRIDIS[i + 1][j] - v)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  function niceStep(range, target) {
    const raw = range / Math.max(1, target);
    const mag = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  /** Draw words × time bins; returns a one-sentence description of the strongest cell. */
  function drawHeatmap(canvas, words, matrix, edges, audioEnd) {
    const dpr = window.devicePixelRatio || 1;
    const cssW = Math.max(240, Math.min(900, canvas.parentElement.clientWidth || 720));
    const ctx = canvas.getContext("2d");
    const font = "12px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";
    ctx.font = font;
    const labelW = Math.max(40, ...words.map((w) => ctx.measureText(w).width)) + 12;
    const rowH = 18, top = 8, axisH = 36, barW = 14, barGap = 54;
    const plotW = Math.max(120, cssW - labelW - barW - barGap - 8);
    const plotH = Math.max(rowH, words.length * rowH);
    const cssH = top + plotH + axisH;
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    canvas.style.height = `${cssH}px`;
    canvas.style.maxWidth = `${cssW}px`;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = font;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, cssW, cssH);

    const t0 = edges[0], t1 = edges[edges.length - 1];
    const x = (t) => labelW + ((t - t0) / ((t1 - t0) || 1)) * plotW;
    let vmin = Infinity, vmax = -Infinity, best = null;
    matrix.forEach((row, n) => row.forEach((v, t) => {
      if (v === null || !Number.isFinite(v)) return;
      if (v < vmin) vmin = v;
      if (v > vmax) { vmax = v; best = [n, t]; }
    }));
    if (!Number.isFinite(vmin)) { vmin = 0; vmax = 1; }
    const span = vmax - vmin || 1;

    matrix.forEach((row, n) => row.forEach((v, t) => {
      const xa = x(edges[t]), xb = x(edges[t + 1]);
      ctx.fillStyle = v === null || !Number.isFinite(v) ? "#d0d4db" : viridis((v - vmin) / span);
      ctx.fillRect(xa, top + n * rowH, Math.max(1, xb - xa + 0.5), rowH + 0.5);
    }));

    // word labels
    ctx.fillStyle = "#1d2330";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    words.forEach((w, n) => ctx.fillText(w, labelW - 6, top + n * rowH + rowH / 2));

    // time axis (seconds in the file)
    ctx.strokeStyle = "#5b6474";
    ctx.beginPath();
    ctx.moveTo(labelW, top + plotH + 0.5);
    ctx.lineTo(labelW + plotW, top + plotH + 0.5);
    ctx.stroke();
    const step = niceStep(t1 - t0, Math.floor(plotW / 70));
    const decimals = Math.max(0, Math.min(3, -Math.floor(Math.log10(step) + 1e-9)));
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let t = Math.ceil(t0 / step - 1e-9) * step; t <= t1 + 1e-9; t += step) {
      const xt = x(t);
      ctx.beginPath();
      ctx.moveTo(xt, top + plotH);
      ctx.lineTo(xt, top + plotH + 4);
      ctx.stroke();
      ctx.fillText(t.toFixed(decimals), xt, top + plotH + 6);
    }
    ctx.fillStyle = "#5b6474";
    ctx.fillText("time in file (s)", labelW + plotW / 2, top + plotH + 21);

    // end of the real audio when the window was zero-padded
    if (Number.isFinite(audioEnd) && audioEnd < t1 - 1e-6) {
      ctx.setLineDash([4, 3]);
      ctx.strokeStyle = "#fff";
      ctx.beginPath();
      ctx.moveTo(x(audioEnd), top);
      ctx.lineTo(x(audioEnd), top + plotH);
      ctx.stroke();
      ctx.setLineDash([]);
    }

    // colour bar
    const bx = labelW + plotW + 12;
    const grad = ctx.createLinearGradient(0, top + plotH, 0, top);
    for (let i = 0; i <= 8; i++) grad.addColorStop(i / 8, viridis(i / 8));
    ctx.fillStyle = grad;
    ctx.fillRect(bx, top, barW, plotH);
    ctx.fillStyle = "#1d2330";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillText(fmtNum(vmax), bx + barW + 4, top);
    ctx.textBaseline = "bottom";
    ctx.fillText(fmtNum(vmin), bx + barW + 4, top + plotH);

    canvas.dataset.drawn = "1";
    if (!best) return "No finite values.";
    const [n, t] = best;
    return `Strongest: “${words[n]}” at ${edges[t].toFixed(2)}–${edges[t + 1].toFixed(2)} s (${fmtNum(vmax)}).`;
  }

  return { draw: drawHeatmap, viridis };
})();
