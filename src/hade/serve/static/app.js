/* hade search page: text/audio search, per-result players that start at the matched window, a waveform
   thumbnail per result with the window marked, and the "why?" view (the query's score over the file, THA
   word × time heat maps) opened inside the result it explains. The query, k and "per file" live in the URL.
   No dependencies, no external requests. */
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  // query: what produced the results on screen ({kind: "text", q} | {kind: "audio", id} | {kind: "like", id});
  // "Why?" explains that query, not whatever is in the search box now.
  const state = { query: null, maxUpload: 20 * 1024 * 1024, requestSeq: 0, explainSeq: 0, explanation: null,
                  peaks: new Map(), peakQueue: [], peaksActive: 0 };
  const PEAK_REQUESTS = 4;  // envelopes fetched at once

  // ---- small helpers -------------------------------------------------------------------------------
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) node.append(child);
    return node;
  }

  function fmtTime(s) {
    if (!Number.isFinite(s)) return "?";
    const m = Math.floor(s / 60);
    const sec = s - 60 * m;
    return `${m}:${sec.toFixed(2).padStart(5, "0")}`;
  }

  function fmtNum(v, digits = 3) {
    return Number.isFinite(v) ? v.toFixed(digits) : "–";
  }

  function fmtBytes(n) {
    return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(0)} MB` : `${(n / 1024).toFixed(0)} kB`;
  }

  function setStatus(message, isError = false) {
    const status = $("#status");
    status.textContent = message;
    status.classList.toggle("error", isError);
  }

  async function fetchJSON(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      throw new Error("cannot reach the server");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    if (!response.ok) {
      const error = new Error(body && body.error ? body.error : `HTTP ${response.status}`);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  // ---- health --------------------------------------------------------------------------------------
  async function loadHealth() {
    try {
      const h = await fetchJSON("health");
      state.maxUpload = h.max_upload_bytes || state.maxUpload;
      $("#upload-limit").textContent = fmtBytes(state.maxUpload);
      const files = h.files !== null && h.files !== undefined ? `${h.files} files, ` : "";
      const fp = String(h.model_fingerprint || "?");
      $("#health").textContent = `${files}${h.windows} windows · head ${h.head} · model ${fp.slice(0, 12)}`;
      $("#health").title = `model fingerprint ${fp}`;
    } catch (err) {
      $("#health").textContent = `server unavailable: ${err.message}`;
    }
  }

  // ---- results -------------------------------------------------------------------------------------
  function pauseOthers(current) {
    for (const audio of document.querySelectorAll(".result audio")) {
      if (audio !== current && !audio.paused) audio.pause();
    }
  }

  function setupAudio(audio, start, end, item) {
    let positioned = false;
    const seekToStart = () => {
      try {
        audio.currentTime = start;
        positioned = true;
      } catch (err) {
        /* not seekable yet: retried on loadedmetadata */
      }
    };
    audio.addEventListener("loadedmetadata", () => {
      if (!positioned) seekToStart();
    });
    audio.addEventListener("play", () => {
      pauseOthers(audio);
      if (!positioned) seekToStart();
    });
    audio.addEventListener("timeupdate", () => {
      const stopAt = Number(audio.dataset.stopAt);
      if (audio.dataset.stopAt && audio.currentTime >= stopAt) {
        audio.pause();
        delete audio.dataset.stopAt;
      }
    });
    audio.addEventListener("error", () => {
      if (!item.querySelector(".audio-error")) {
        item.append(el("p", { class: "audio-error status error", text: "This audio file could not be loaded." }));
      }
    });
  }

  function playWindow(audio, start, end) {
    audio.dataset.stopAt = String(end);
    try {
      audio.currentTime = start;
    } catch (err) {
      /* before metadata: the play handler seeks */
    }
    const played = audio.play();
    if (played && played.catch) played.catch((err) => setStatus(`cannot play: ${err.message}`, true));
  }

  function makeResult(hit, rank) {
    const parts = hit.path.split("/");
    const name = parts.pop();
    const dir = parts.join("/");
    const span = `${fmtTime(hit.start)}–${fmtTime(hit.end)}`;
    const item = el("li", { class: "result", "data-id": hit.id, "data-start": hit.start, "data-end": hit.end });
    const head = el("div", { class: "result-head" },
      el("span", { class: "result-rank", text: `${rank}.` }),
      el("span", { class: "result-path", title: hit.path, text: name }),
      el("span", { class: "result-time", text: span }),
      el("span", { class: "result-score", text: `score ${fmtNum(hit.score)}` }));
    item.append(head);
    if (dir) item.append(el("div", { class: "result-dir", text: dir }));
    const audio = el("audio", { controls: true, preload: "metadata", src: hit.audio_url,
                                "aria-label": `Audio of ${hit.path}; the match is ${span}` });
    setupAudio(audio, hit.start, hit.end, item);
    const play = el("button", { type: "button", class: "play-btn", text: "▶ Play match",
                                "aria-label": `Play ${name} from ${span}` });
    play.addEventListener("click", () => playWindow(audio, hit.start, hit.end));
    const why = el("button", { type: "button", class: "explain-btn", text: "Why?", "aria-controls": "explain",
                               "aria-label": `Why does ${name} ${span} match?` });
    why.addEventListener("click", () => explainResult(hit, item));
    const similar = el("button", { type: "button", class: "similar-btn", text: "Similar sounds",
                                   "aria-label": `Find sounds like ${name} ${span}` });
    similar.addEventListener("click", () => searchLike(hit.id, `sounds like ${name} ${span}`));
    const wave = el("canvas", { class: "wave", role: "img", title: "Click to play from there",
                                "aria-label": `Waveform of ${name}; the match ${span} is marked` });
    wave.addEventListener("click", (event) => {
      const duration = Number(wave.dataset.duration);
      if (!Number.isFinite(duration)) return;
      const rect = wave.getBoundingClientRect();
      const t = ((event.clientX - rect.left) / rect.width) * duration;
      playWindow(audio, t, duration);
    });
    item.append(wave, audio, el("div", { class: "result-actions" }, play, why, similar));
    queuePeaks(hit, wave);
    return item;
  }

  // ---- waveform thumbnails -------------------------------------------------------------------------
  function peaksOf(hit) {
    // one request per file (the server caches the envelope per file too)
    if (!state.peaks.has(hit.path)) {
      state.peaks.set(hit.path, new Promise((resolve, reject) => {
        state.peakQueue.push(() => fetchJSON(`peaks/${encodeURIComponent(hit.id)}`).then(resolve, reject));
        pumpPeaks();
      }));
      state.peaks.get(hit.path).catch(() => state.peaks.delete(hit.path));  // retried by a later search
    }
    return state.peaks.get(hit.path);
  }

  function pumpPeaks() {
    while (state.peaksActive < PEAK_REQUESTS && state.peakQueue.length) {
      const job = state.peakQueue.shift();
      state.peaksActive += 1;
      job().finally(() => { state.peaksActive -= 1; pumpPeaks(); });
    }
  }

  function drawWave(canvas, hit, env) {
    canvas.dataset.duration = String(env.duration);
    window.hadePlots.waveform(canvas, env.peaks, env.duration, hit.start, hit.end);
  }

  function queuePeaks(hit, canvas) {
    peaksOf(hit).then((env) => {
      canvas.hadeEnvelope = env;
      if (canvas.isConnected) drawWave(canvas, hit, env);
    }, (err) => {
      canvas.replaceWith(el("p", { class: "muted small", text: `No waveform: ${err.message}` }));
    });
  }

  function redrawWaves() {
    for (const canvas of document.querySelectorAll("#results canvas.wave[data-drawn='1']")) {
      const item = canvas.closest(".result");
      const hit = { start: Number(item.dataset.start), end: Number(item.dataset.end) };
      if (canvas.hadeEnvelope) drawWave(canvas, hit, canvas.hadeEnvelope);
    }
  }

  function renderResults(results) {
    const list = $("#results");
    closeExplanation();
    list.replaceChildren(...results.map((hit, i) => makeResult(hit, i + 1)));
    $("#no-results").hidden = results.length > 0;
  }

  /** Run a search; on success its results replace the old ones, and `query(body)` becomes what "Why?" explains. */
  async function runSearch(url, options, label, query) {
    const seq = ++state.requestSeq;
    const t0 = performance.now();
    setStatus(`Searching for ${label}…`);
    closeExplanation();
    document.querySelectorAll("#search-btn, #audio-btn").forEach((b) => { b.disabled = true; });
    try {
      const body = await fetchJSON(url, options);
      if (seq !== state.requestSeq) return;
      state.query = query(body);
      renderResults(body.results);
      const secs = ((performance.now() - t0) / 1000).toFixed(2);
      setStatus(`${body.results.length} result${body.results.length === 1 ? "" : "s"} for ${label} (${secs} s)`);
    } catch (err) {
      if (seq === state.requestSeq) setStatus(`Search failed: ${err.message}`, true);
    } finally {
      if (seq === state.requestSeq) {
        document.querySelectorAll("#search-btn, #audio-btn").forEach((b) => { b.disabled = false; });
      }
    }
  }

  function commonParams() {
    return { k: $("#k").value, per_file: $("#per-file").checked ? "true" : "false" };
  }

  /** The page's address: the query (q= text, or like= window id), k and per_file, for reload and sharing. */
  function setURL(query) {
    const params = new URLSearchParams({ ...query, ...commonParams() });
    history.replaceState(null, "", `?${params}`);
  }

  function searchText(q) {
    setURL({ q });
    runSearch(`search?${new URLSearchParams({ q, ...commonParams() })}`, undefined, `“${q}”`,
      () => ({ kind: "text", q }));
  }

  function searchLike(id, label) {
    setURL({ like: id });
    runSearch(`similar/${encodeURIComponent(id)}?${new URLSearchParams(commonParams())}`, undefined, label,
      () => ({ kind: "like", id }));
  }

  function onTextSearch(event) {
    event.preventDefault();
    const q = $("#q").value.trim();
    if (!q) {
      setStatus("Type what you are looking for first.", true);
      $("#q").focus();
      return;
    }
    searchText(q);
  }

  function onAudioSearch(event) {
    event.preventDefault();
    const file = $("#audio-file").files[0];
    if (!file) {
      setStatus("Choose an audio file first.", true);
      return;
    }
    if (file.size > state.maxUpload) {
      setStatus(`That file is ${fmtBytes(file.size)}; the limit is ${fmtBytes(state.maxUpload)}.`, true);
      return;
    }
    const form = new FormData();
    form.append("file", file, file.name);
    setURL({});  // an upload cannot be put in the address; k and per_file can
    runSearch(`search/audio?${new URLSearchParams(commonParams())}`, { method: "POST", body: form },
      `the clip ${file.name}`, (body) => ({ kind: "audio", id: body.query_id, name: file.name }));
  }

  // ---- explanation ---------------------------------------------------------------------------------
  function closeExplanation() {
    state.explainSeq += 1;  // an explanation still on its way is dropped
    state.explanation = null;
    const section = $("#explain");
    section.hidden = true;
    document.querySelector("main").append(section);  // out of the result it was in (results get replaced)
    $("#heatmaps").replaceChildren();
    $("#factors").replaceChildren();
    document.querySelectorAll(".result.selected").forEach((r) => r.classList.remove("selected"));
  }

  function explainParams(query) {
    if (query.kind === "text") return { q: query.q };
    if (query.kind === "audio") return { audio: query.id };
    return { like: query.id };
  }

  async function explainResult(hit, item) {
    const query = state.query;
    if (!query) return;
    closeExplanation();
    item.classList.add("selected");
    const seq = state.explainSeq;
    setStatus(`Explaining ${hit.path} ${fmtTime(hit.start)}–${fmtTime(hit.end)}…`);
    let data;
    try {
      data = await fetchJSON(`explain/${encodeURIComponent(hit.id)}?${new URLSearchParams(explainParams(query))}`);
    } catch (err) {
      if (seq === state.explainSeq) setStatus(`Explanation failed: ${err.message}`, true);
      return;
    }
    if (seq !== state.explainSeq) return;
    state.explanation = data;
    item.append($("#explain"));  // the panel opens inside the result it explains
    renderExplanation(data);
    setStatus(`Explained ${hit.path}.`);
    $("#explain-heading").focus();
  }

  function renderExplanation(data) {
    const section = $("#explain");
    section.hidden = false;
    const what = data.query_kind === "text" ? `“${data.query}”` : data.query;
    let summary = `${what} vs ${data.path} (${fmtTime(data.start)}–${fmtTime(data.end)}): score ${fmtNum(data.score)}`;
    // the maps are computed from the window's audio; the ranking used its stored (float16 or compressed) vectors
    if (Math.abs(data.score - data.stored_score) >= 5e-4) summary += ` (as ranked, from the stored vectors: ${fmtNum(data.stored_score)})`;
    if (data.tha_score !== null && data.tha_score !== undefined) summary += ` · THA ${fmtNum(data.tha_score)}`;
    if (data.dcr_score !== null && data.dcr_score !== undefined) summary += ` · factors ${fmtNum(data.dcr_score)}`;
    $("#explain-summary").textContent = summary;
    $("#explain-note").textContent = data.note || "";
    $("#explain-note").hidden = !data.note;
    $(".direction").hidden = !(data.levels && data.levels.length);
    drawCurve();
    drawAllLevels();
    renderFactors(data);
  }

  function drawCurve() {
    const data = state.explanation;
    if (!data || !data.curve) return;
    const canvas = $("#curve");
    const described = window.hadePlots.curve(canvas, data.curve);
    canvas.setAttribute("aria-label", `Score of the query over ${data.path}: ${described}`);
    $("#curve-caption").textContent = `Score of the query over every window of this file (the match is shaded): ${described}`;
  }

  function direction() {
    const checked = document.querySelector('input[name="direction"]:checked');
    return checked ? checked.value : "text_to_audio";
  }

  function drawAllLevels() {
    const data = state.explanation;
    const box = $("#heatmaps");
    box.replaceChildren();
    if (!data || !data.levels || !data.levels.length) return;  // the note says why
    const dir = direction();
    const what = dir === "text_to_audio" ? "text → audio" : "audio → text";
    for (const lv of data.levels) {
      const title = `Level ${lv.level}: ${lv.audio_name} ↔ ${lv.text_name} · ` +
        `S_te ${fmtNum(lv.text_enhanced)} · S_ae ${fmtNum(lv.audio_enhanced)}`;
      const canvas = el("canvas", { class: "heatmap", role: "img", "data-level": lv.level, "data-direction": dir });
      box.append(el("figure", { class: "heatmap-block" }, el("h3", { text: title }), canvas));
      const described = window.hadeHeatmap.draw(canvas, data.words, lv[dir], lv.time_edges, data.audio_end);
      canvas.setAttribute("aria-label", `Heat map, level ${lv.level}, ${what}: rows are words, columns are ` +
        `seconds in the file. ${described}`);
    }
  }

  function renderFactors(data) {
    const box = $("#factors");
    box.replaceChildren();
    const sim = data.factor_similarity;
    if (!sim || !sim.length) return;
    const conf = data.confidence;
    const contrib = data.factor_contribution;
    const headRow = el("tr", {}, el("th", { scope: "col", text: "factor" }), el("th", { scope: "col", text: "cos(text, audio)" }));
    if (conf) headRow.append(el("th", { scope: "col", text: "CA weight" }), el("th", { scope: "col", text: "contribution" }));
    const body = el("tbody");
    sim.forEach((v, i) => {
      const row = el("tr", {}, el("td", { text: `${i + 1}` }), el("td", { text: fmtNum(v) }));
      if (conf) row.append(el("td", { text: fmtNum(conf[i]) }), el("td", { text: fmtNum(contrib ? contrib[i] : null) }));
      body.append(row);
    });
    box.append(el("h3", { text: "Disentangled factors" }),
      el("div", { class: "table-scroll", tabindex: "0", role: "region", "aria-label": "Factor table" },
        el("table", { class: "factor-table" }, el("thead", {}, headRow), body)));
  }

  // ---- wiring --------------------------------------------------------------------------------------
  function restoreFromURL() {
    const params = new URLSearchParams(location.search);
    const k = params.get("k");
    if (k && /^[0-9]+$/.test(k)) {
      if (![...$("#k").options].some((o) => o.value === k)) $("#k").append(el("option", { value: k, text: k }));
      $("#k").value = k;
    }
    $("#per-file").checked = params.get("per_file") === "true";
    const q = params.get("q");
    const like = params.get("like");
    if (q) {
      $("#q").value = q;
      searchText(q.trim());
    } else if (like && /^[0-9]+$/.test(like)) {
      searchLike(Number(like), `sounds like window ${like}`);
    } else {
      $("#q").focus();
    }
  }

  function init() {
    $("#search-form").addEventListener("submit", onTextSearch);
    $("#audio-form").addEventListener("submit", onAudioSearch);
    document.querySelectorAll('input[name="direction"]').forEach((r) => r.addEventListener("change", drawAllLevels));
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        redrawWaves();
        if (state.explanation) { drawCurve(); drawAllLevels(); }
      }, 200);
    });
    loadHealth();
    restoreFromURL();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
