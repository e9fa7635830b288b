/* hade search page: text/audio search, per-result players that start at the matched window, and the
   "why?" view drawing THA word × time heat maps on canvases. No dependencies, no external requests. */
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const state = { textQuery: "", maxUpload: 20 * 1024 * 1024, requestSeq: 0, explainSeq: 0, explanation: null };

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
    similar.addEventListener("click", () => {
      const params = new URLSearchParams(commonParams());
      runSearch(`similar/${encodeURIComponent(hit.id)}?${params}`, undefined, `sounds like ${name} ${span}`);
    });
    item.append(audio, el("div", { class: "result-actions" }, play, why, similar));
    return item;
  }

  function renderResults(results) {
    const list = $("#results");
    list.replaceChildren(...results.map((hit, i) => makeResult(hit, i + 1)));
    $("#no-results").hidden = results.length > 0;
  }

  async function runSearch(url, options, label) {
    const seq = ++state.requestSeq;
    const t0 = performance.now();
    setStatus(`Searching for ${label}…`);
    document.querySelectorAll("#search-btn, #audio-btn").forEach((b) => { b.disabled = true; });
    try {
      const body = await fetchJSON(url, options);
      if (seq !== state.requestSeq) return;
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

  function onTextSearch(event) {
    event.preventDefault();
    const q = $("#q").value.trim();
    if (!q) {
      setStatus("Type what you are looking for first.", true);
      $("#q").focus();
      return;
    }
    state.textQuery = q;
    const params = new URLSearchParams({ q, ...commonParams() });
    history.replaceState(null, "", `?${new URLSearchParams({ q })}`);
    runSearch(`search?${params}`, undefined, `“${q}”`);
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
    const params = new URLSearchParams(commonParams());
    runSearch(`search/audio?${params}`, { method: "POST", body: form }, `the clip ${file.name}`);
  }

  // ---- explanation ---------------------------------------------------------------------------------
  async function explainResult(hit, item) {
    const q = state.textQuery || $("#q").value.trim();
    if (!q) {
      setStatus("Type a description in the search box: the explanation compares it with the match.", true);
      $("#q").focus();
      return;
    }
    document.querySelectorAll(".result.selected").forEach((r) => r.classList.remove("selected"));
    item.classList.add("selected");
    const seq = ++state.explainSeq;
    setStatus(`Explaining ${hit.path} ${fmtTime(hit.start)}–${fmtTime(hit.end)}…`);
    let data;
    try {
      data = await fetchJSON(`explain/${encodeURIComponent(hit.id)}?${new URLSearchParams({ q })}`);
    } catch (err) {
      if (seq !== state.explainSeq) return;
      if (err.body && err.status === 409) {
        data = err.body;  // no THA in this head: show the score and factor weights there are
      } else {
        setStatus(`Explanation failed: ${err.message}`, true);
        return;
      }
    }
    if (seq !== state.explainSeq) return;
    state.explanation = data;
    renderExplanation(data);
    setStatus(data.error ? data.error : `Explained ${hit.path}.`, Boolean(data.error));
    $("#explain-heading").focus();
  }

  function renderExplanation(data) {
    const section = $("#explain");
    section.hidden = false;
    section.parentElement.classList.add("explaining");
    let summary = `“${data.query}” vs ${data.path} (${fmtTime(data.start)}–${fmtTime(data.end)}): score ${fmtNum(data.score)}`;
    if (data.tha_score !== null && data.tha_score !== undefined) summary += ` · THA ${fmtNum(data.tha_score)}`;
    if (data.dcr_score !== null && data.dcr_score !== undefined) summary += ` · factors ${fmtNum(data.dcr_score)}`;
    $("#explain-summary").textContent = summary;
    $(".direction").hidden = !(data.levels && data.levels.length);
    drawAllLevels();
    renderFactors(data);
  }

  function direction() {
    const checked = document.querySelector('input[name="direction"]:checked');
    return checked ? checked.value : "text_to_audio";
  }

  function drawAllLevels() {
    const data = state.explanation;
    const box = $("#heatmaps");
    box.replaceChildren();
    if (!data || !data.levels || !data.levels.length) {
      if (data) box.append(el("p", { class: "muted", text: "This model has no word × time alignment to show." }));
      return;
    }
    const dir = direction();
    const what = dir === "text_to_audio" ? "text → audio" : "audio → text";
    for (const lv of data.levels) {
      const title = `Level ${lv.level}: HTSAT stage ${lv.audio_stage} ↔ BERT block ${lv.text_block} · ` +
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
      el("table", { class: "factor-table" }, el("thead", {}, headRow), body));
  }

  // ---- wiring --------------------------------------------------------------------------------------
  function init() {
    $("#search-form").addEventListener("submit", onTextSearch);
    $("#audio-form").addEventListener("submit", onAudioSearch);
    document.querySelectorAll('input[name="direction"]').forEach((r) => r.addEventListener("change", drawAllLevels));
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (state.explanation) drawAllLevels(); }, 200);
    });
    loadHealth();
    const q = new URLSearchParams(location.search).get("q");
    if (q) {
      $("#q").value = q;
      $("#search-form").requestSubmit();
    } else {
      $("#q").focus();
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
