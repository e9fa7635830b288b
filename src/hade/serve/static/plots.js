/* hade search page: waveform thumbnails (from GET /peaks envelopes) and the score-over-time curve of "Why?",
   drawn on canvases. Exposes window.hadePlots.{waveform, curve}. No dependencies. */
"use strict";

window.hadePlots = (() => {
  const INK = "#1d2330", MUTED = "#5b6474", LINE = "#d9dde5", ACCENT = "#2f5bd3", MARK = "rgba(255, 191, 71, 0.45)";
  const FONT = "12px system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif";

  /** Size the canvas backing store to its CSS box (at least minW px wide) and return a 2-D context in CSS px. */
  function prepare(canvas, cssH, minW = 120) {
    const dpr = window.devicePixelRatio || 1;
    const cssW = Math.max(minW, Math.round(canvas.getBoundingClientRect().width || canvas.parentElement.clientWidth || 300));
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    canvas.style.height = `${cssH}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = FONT;
    return { ctx, w: cssW, h: cssH };
  }

  /** Waveform of a whole file (peaks [[min, max], ...] over `duration` s) with [start, end] s marked. */
  function waveform(canvas, peaks, duration, start, end) {
    const { ctx, w, h } = prepare(canvas, 48);
    ctx.fillStyle = "#f8f9fb";
    ctx.fillRect(0, 0, w, h);
    const x = (t) => (duration > 0 ? (t / duration) * w : 0);
    const xa = x(start), xb = Math.max(x(end), xa + 2);
    ctx.fillStyle = MARK;
    ctx.fillRect(xa, 0, xb - xa, h);
    const mid = h / 2, amp = h / 2 - 2;
    const n = peaks.length;
    ctx.fillStyle = "#8792a6";
    for (let px = 0; px < w; px++) {
      const a = Math.floor((px / w) * n), b = Math.max(a + 1, Math.floor(((px + 1) / w) * n));
      let lo = 0, hi = 0;
      for (let i = a; i < Math.min(b, n); i++) {
        lo = Math.min(lo, peaks[i][0]);
        hi = Math.max(hi, peaks[i][1]);
      }
      const t = (px + 0.5) / w * duration;
      ctx.fillStyle = t >= start && t <= end ? ACCENT : "#8792a6";
      ctx.fillRect(px, mid - hi * amp, 1, Math.max(1, (hi - lo) * amp));
    }
    ctx.strokeStyle = ACCENT;
    ctx.lineWidth = 2;
    ctx.strokeRect(xa + 1, 1, xb - xa - 2, h - 2);
    canvas.dataset.drawn = "1";
    canvas.dataset.markerStart = String(xa);
    canvas.dataset.markerEnd = String(xb);
  }

  function niceStep(range, target) {
    const raw = range / Math.max(1, target);
    const mag = 10 ** Math.floor(Math.log10(raw || 1));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  /** Score of the query against every window of a file (curve {start, end, score, matched}); the matched
      window is shaded and its point ringed. Returns a one-sentence description. */
  function curve(canvas, data) {
    const { ctx, w, h } = prepare(canvas, 150, 200);
    const left = 46, right = 10, top = 10, bottom = 34;
    const pw = w - left - right, ph = h - top - bottom;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    const t0 = Math.min(...data.start), t1 = Math.max(...data.end);
    const centres = data.start.map((s, i) => (s + data.end[i]) / 2);
    let lo = Math.min(...data.score), hi = Math.max(...data.score);
    if (hi - lo < 1e-6) { lo -= 0.5; hi += 0.5; }
    const pad = 0.08 * (hi - lo);
    lo -= pad; hi += pad;
    const x = (t) => left + ((t - t0) / ((t1 - t0) || 1)) * pw;
    const y = (v) => top + (1 - (v - lo) / (hi - lo)) * ph;
    const m = data.matched;
    ctx.fillStyle = MARK;
    ctx.fillRect(x(data.start[m]), top, Math.max(2, x(data.end[m]) - x(data.start[m])), ph);
    // axes
    ctx.strokeStyle = LINE;
    ctx.strokeRect(left + 0.5, top + 0.5, pw, ph);
    ctx.fillStyle = MUTED;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of [lo + pad, hi - pad]) ctx.fillText(v.toFixed(3), left - 4, y(v));
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const step = niceStep(t1 - t0, Math.floor(pw / 70));
    const decimals = Math.max(0, Math.min(3, -Math.floor(Math.log10(step) + 1e-9)));
    for (let t = Math.ceil(t0 / step - 1e-9) * step; t <= t1 + 1e-9; t += step) ctx.fillText(t.toFixed(decimals), x(t), top + ph + 4);
    ctx.fillText("time in file (s)", left + pw / 2, top + ph + 19);
    // the curve: one point per window, at its centre
    ctx.strokeStyle = ACCENT;
    ctx.lineWidth = 2;
    ctx.beginPath();
    centres.forEach((c, i) => (i ? ctx.lineTo(x(c), y(data.score[i])) : ctx.moveTo(x(c), y(data.score[i]))));
    ctx.stroke();
    ctx.fillStyle = ACCENT;
    centres.forEach((c, i) => { ctx.beginPath(); ctx.arc(x(c), y(data.score[i]), 2.5, 0, 2 * Math.PI); ctx.fill(); });
    ctx.strokeStyle = INK;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(x(centres[m]), y(data.score[m]), 6, 0, 2 * Math.PI);
    ctx.stroke();
    canvas.dataset.drawn = "1";
    const best = data.score.indexOf(Math.max(...data.score));
    return `${data.score.length} windows; the matched one (${data.start[m].toFixed(2)}–${data.end[m].toFixed(2)} s) ` +
      `scores ${data.score[m].toFixed(3)}; the best in this file is ${data.start[best].toFixed(2)}–` +
      `${data.end[best].toFixed(2)} s (${data.score[best].toFixed(3)}).`;
  }

  return { waveform, curve };
})();
