// pixquery search page: plain JavaScript, no build step, no dependencies.
// Talks to the JSON API of the same server (/api/...); the token, when one is set, is a cookie.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    form: $("search"), q: $("q"), file: $("file"), threshold: $("threshold"), thresholdValue: $("threshold-value"),
    limit: $("limit"), grid: $("grid"), sentinel: $("sentinel"), message: $("message"), drop: $("drop"),
    queryImage: $("query-image"), queryThumb: $("query-thumb"), queryCaption: $("query-caption"),
    libModel: $("lib-model"), libIndex: $("lib-index"), libImages: $("lib-images"),
    indexing: $("indexing"), indexingText: $("indexing-text"), indexingBar: $("indexing-bar"),
    viewer: $("viewer"), vImg: $("v-img"), vName: $("v-name"), vPath: $("v-path"), vSize: $("v-size"),
    vDate: $("v-date"), vScore: $("v-score"), vVideo: $("v-video"), vBox: $("v-box"),
    vWhen: $("v-when"), vWhenLabel: $("v-when-label"), vSimilar: $("v-similar"), vOriginal: $("v-original"),
    vClose: $("v-close"), vPrev: $("v-prev"), vNext: $("v-next"), vMore: $("v-more"), vLess: $("v-less"),
    refine: $("refine"), refineText: $("refine-text"), refineClear: $("refine-clear"), collapse: $("collapse"),
    after: $("after"), before: $("before"), folder: $("folder"), sort: $("sort"), clearFilters: $("clear-filters"),
    vCamera: $("v-camera"), vCameraLabel: $("v-camera-label"), vPlace: $("v-place"), vPlaceLabel: $("v-place-label"), vMap: $("v-map"),
    vTextBoxes: $("v-text-boxes"), vText: $("v-text"), vTextLabel: $("v-text-label"),
  };

  let info = null;        // GET /api/info
  let calibrated = null;  // the threshold `pixquery eval` stored, if any
  let search = null;      // {kind: "text"|"image"|"upload", value, label, like[], unlike[], nextOffset, results[], seq, controller}
  // like / unlike: photos of the library added to / subtracted from the search ("More like this",
  // "Less like this" in the viewer), as {id, name}; the server combines them with the query
  // (docs/search.md). A typed text may itself add and subtract phrases: "beach +sunset -people".
  let seq = 0;            // drops answers of superseded searches
  // Search as you type: a search starts once the box has been still for this long (index.html's
  // data-debounce-ms); Enter searches at once. Each new search aborts the request of the one before
  // (AbortController) and, whatever the network does, an answer is shown only if its search is
  // still the latest (seq): a slow answer to "a re" can never replace the results for "a red car".
  const TYPE_DELAY = parseInt(els.q.dataset.debounceMs, 10) || 150;
  let typeTimer = null;
  let renders = 0, stale = 0; // counters on #grid (data-renders, data-stale), for tests and the curious
  let viewerIndex = -1;
  let pollTimer = null;
  let queryBlobUrl = null;
  const PAGE = 30;

  // -- helpers --------------------------------------------------------------------------------
  function setMessage(text, isError) {
    els.message.textContent = text || "";
    els.message.classList.toggle("error", !!isError);
  }

  async function api(url, options) {
    // options.signal: an AbortSignal; an aborted request rejects with an AbortError (see isAbort).
    const res = await fetch(url, Object.assign({ credentials: "same-origin", headers: { Accept: "application/json" } }, options || {}));
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      if (res.status === 401) throw new Error("This server needs a token: open the URL printed by `pixquery serve`.");
      throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
    }
    return body;
  }

  function fmtBytes(n) {
    if (n == null) return "";
    const units = ["bytes", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + units[i];
  }

  function fmtDate(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function clock(seconds) {
    const s = Math.max(0, Math.floor((seconds || 0) + 1e-6));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
  }

  function thresholdParam() {
    const v = parseFloat(els.threshold.value);
    return v >= parseFloat(els.threshold.max) ? null : v.toFixed(3);
  }

  function showThreshold() {
    const p = thresholdParam();
    els.thresholdValue.textContent = p === null ? "off" : Number(p).toFixed(2);
    els.thresholdValue.classList.toggle("calibrated", calibrated !== null && p !== null && Math.abs(p - calibrated) < 0.0051);
    els.threshold.title = calibrated !== null ? `calibrated threshold: ${calibrated.toFixed(3)}` : "no calibrated threshold stored";
  }

  // -- filters: a date range (inclusive days), a folder, the order --------------------------------
  // The API's `before` is exclusive (the start of the period given): the day after the "To" day.
  function dayAfter(iso) {
    const d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + 1);
    return d.toISOString().slice(0, 10);
  }

  function filterParams(p) {
    if (els.after.value) p.set("after", els.after.value);
    if (els.before.value) p.set("before", dayAfter(els.before.value));
    if (els.folder.value) p.append("in", els.folder.value);
    if (els.sort.value !== "score") p.set("sort", els.sort.value);
    return p;
  }

  function filtersOn() {
    return !!(els.after.value || els.before.value || els.folder.value || els.sort.value !== "score");
  }

  function showFolders(folders) {
    const chosen = els.folder.dataset.want || els.folder.value;
    for (const f of folders || []) {
      if ([...els.folder.options].some((o) => o.value === f)) continue;
      const o = document.createElement("option");
      o.value = f;
      o.textContent = f;
      els.folder.append(o);
    }
    if (chosen) els.folder.value = chosen;
    delete els.folder.dataset.want;
  }

  // -- library facts and indexing progress ---------------------------------------------------
  async function loadInfo() {
    try {
      info = await api("/api/info");
    } catch (e) {
      setMessage(e.message, true);
      return;
    }
    els.libModel.innerHTML = "";
    els.libModel.append("model ", bold(info.model));
    els.libIndex.innerHTML = "";
    if (info.index) els.libIndex.append("index ", bold(info.index.kind), ` (${info.index.entries.toLocaleString()} entries)`);
    else els.libIndex.append("no index yet: run ", bold("pixquery index FOLDER"));
    els.libImages.innerHTML = "";
    els.libImages.append(bold(info.images.toLocaleString()), " images");
    showFolders(info.folders);
    if (info.calibrated_threshold != null && calibrated === null) {
      calibrated = info.calibrated_threshold;
      const min = parseFloat(els.threshold.min), max = parseFloat(els.threshold.max);
      if (calibrated < min) els.threshold.min = Math.max(0, calibrated - 0.05).toFixed(2);
      if (calibrated >= max) els.threshold.max = Math.min(1, calibrated + 0.05).toFixed(2);
      if (!location.hash.includes("t=")) els.threshold.value = calibrated;
    }
    showThreshold();
    showIndexing(info.indexing);
  }

  function bold(text) {
    const b = document.createElement("b");
    b.textContent = text;
    return b;
  }

  function showIndexing(st) {
    clearTimeout(pollTimer);
    if (st) {
      els.indexing.hidden = false;
      const total = st.total || 0, done = st.done || 0;
      els.indexingText.textContent = st.stage === "embedding" && total
        ? `indexing: ${done.toLocaleString()} / ${total.toLocaleString()} photos${st.failed ? `, ${st.failed} failed` : ""}`
        : `indexing: ${st.stage || "running"}`;
      els.indexingBar.max = total || 1;
      els.indexingBar.value = total ? done : 0;
      pollTimer = setTimeout(pollStatus, 1500);
    } else {
      const wasIndexing = !els.indexing.hidden;
      els.indexing.hidden = true;
      if (wasIndexing) loadInfo(); // the run finished: new counts, maybe a new index
      pollTimer = setTimeout(pollStatus, 15000);
    }
  }

  async function pollStatus() {
    try {
      const st = await api("/api/status");
      if (info && st.images !== info.images) {
        info.images = st.images;
        els.libImages.innerHTML = "";
        els.libImages.append(bold(st.images.toLocaleString()), " images");
      }
      showIndexing(st.indexing);
    } catch (e) {
      pollTimer = setTimeout(pollStatus, 15000);
    }
  }

  // -- searching ------------------------------------------------------------------------------
  function searchUrl(offset) {
    const p = new URLSearchParams();
    if (search.kind === "text") p.set("q", search.value);
    else if (search.kind === "image") p.set("image_id", search.value);
    else p.set("upload_id", search.value);
    for (const x of search.like) p.append("like", x.id);
    for (const x of search.unlike) p.append("unlike", x.id);
    p.set("k", Math.min(PAGE, limit() - offset));
    p.set("offset", offset);
    if (els.collapse.checked) p.set("collapse", "true"); // near-duplicates folded into one hit (on by default)
    const t = thresholdParam();
    if (t !== null) p.set("threshold", t);
    filterParams(p);
    return "/api/search?" + p.toString();
  }

  function limit() { return parseInt(els.limit.value, 10) || 60; }

  function isAbort(e) { return e && e.name === "AbortError"; }

  // Stop what the current search is doing: a pending keystroke search, its request in flight.
  function cancelSearch() {
    clearTimeout(typeTimer);
    typeTimer = null;
    if (search && search.controller) search.controller.abort();
    els.grid.removeAttribute("aria-busy");
  }

  // typing: started by typing (keeps the old results, dimmed, until the new ones come; one
  // history entry for a run of typing instead of one per keystroke).
  // refine: {like, unlike} to keep (a refined search, a rerun); a new search starts without.
  function startSearch(kind, value, label, typing, refine) {
    cancelSearch();
    const like = refine ? refine.like : [], unlike = refine ? refine.unlike : [];
    search = { kind, value, label, like, unlike, nextOffset: 0, results: [], seq: ++seq, typing: !!typing, replace: !!typing };
    showRefine();
    if (typing && els.grid.childElementCount) els.grid.classList.add("stale");
    else els.grid.innerHTML = "";
    if (kind !== "upload") {
      els.queryImage.hidden = kind !== "image";
      if (kind === "image") {
        els.queryThumb.src = `/api/images/${value}/thumbnail`;
        els.queryCaption.textContent = `more like ${label || "this photo"}`;
      }
    }
    writeHash(typing);
    loadMore();
  }

  // The search box emptied: no search, no results, nothing in flight.
  function clearSearch() {
    cancelSearch();
    ++seq;
    search = null;
    els.grid.innerHTML = "";
    els.grid.classList.remove("stale");
    delete els.grid.dataset.query;
    els.queryImage.hidden = true;
    showRefine();
    setMessage("");
    if (/[#&](q|image)=/.test(location.hash)) {
      const url = location.pathname + location.search;
      if (history.state && history.state.typing) history.replaceState({ typing: true }, "", url);
      else history.pushState({ typing: true }, "", url);
    }
  }

  async function loadMore() {
    // One request at a time per search; a new search aborts the old one's request and drops its answer.
    if (!search || search.loading || search.nextOffset === null || search.nextOffset >= limit()) return;
    const mine = search;
    mine.loading = true;
    mine.controller = new AbortController();
    if (!mine.results.length) {
      els.grid.setAttribute("aria-busy", "true");
      if (!mine.typing) setMessage("searching…"); // typing: the old results stay (dimmed) instead
    }
    try {
      const page = await api(searchUrl(mine.nextOffset), { signal: mine.controller.signal });
      if (mine.seq !== seq) { els.grid.dataset.stale = ++stale; return; }
      appendResults(page);
      mine.nextOffset = page.next_offset;
      describe(page);
    } catch (e) {
      if (isAbort(e) || mine.seq !== seq) return; // superseded: the newer search says what happens
      if (mine.replace) { els.grid.innerHTML = ""; els.grid.classList.remove("stale"); mine.replace = false; }
      setMessage(e.message, true);
      mine.nextOffset = null;
      mine.failed = true; // the same query asked again (Enter, typing) tries again
    } finally {
      mine.loading = false;
      mine.controller = null;
      if (mine.seq === seq) els.grid.removeAttribute("aria-busy");
    }
    if (mine.seq === seq && sentinelVisible()) loadMore();
  }

  function describe(page) {
    const n = search.results.length;
    let text = n ? `${n} result${n === 1 ? "" : "s"}` : "no results";
    if (search.kind === "text") text += ` for “${search.value}”`;
    const refined = search.like.length + search.unlike.length;
    if (refined) text += ` with ${refined} photo${refined === 1 ? "" : "s"} added or subtracted`;
    if (page.threshold != null) text += ` within distance ${page.threshold.toFixed(2)}`;
    const f = (page.query && page.query.filters) || null;
    if (f) {
      if (f.after || f.before) text += `, taken ${f.after ? "from " + els.after.value : ""}${f.after && f.before ? " " : ""}${f.before ? "to " + els.before.value : ""}`;
      if (f.in) text += ` in ${f.in.join(", ")}`;
    }
    if (page.query && page.query.sort === "date") text += ", by date";
    if (!n && f) text += ": widen the filters to see more";
    if (!n && page.threshold != null) text += ": raise the distance slider to see more";
    setMessage(text + (n ? ". Hover for scores, Enter or click to open." : "."));
  }

  function appendResults(page) {
    if (search.replace) { // the first answer of a typed search replaces the previous results
      els.grid.innerHTML = "";
      search.replace = false;
    }
    els.grid.classList.remove("stale");
    const q = page.query || {}; // the query these results answer, as the server says
    els.grid.dataset.query = q.text != null ? q.text : q.image_id != null ? `image:${q.image_id}` : `upload:${page.upload_id || q.upload_id}`;
    els.grid.dataset.renders = ++renders;
    const frag = document.createDocumentFragment();
    for (const r of page.results) {
      const i = search.results.length;
      search.results.push(r);
      const tile = document.createElement("button");
      tile.type = "button";
      tile.className = "tile";
      tile.setAttribute("role", "listitem");
      tile.dataset.index = i;
      tile.title = `${r.name}${r.taken ? "\ntaken " + fmtDate(r.taken) : ""}\nscore ${r.score.toFixed(3)} · distance ${r.distance.toFixed(3)}`;
      if (r.taken) tile.dataset.taken = r.taken;
      const img = document.createElement("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = r.name;
      if (r.thumbnail) img.src = r.thumbnail;
      img.addEventListener("error", () => tile.classList.add("broken"));
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = r.score.toFixed(3);
      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = "#" + r.rank;
      tile.append(img, score, rank);
      if (r.duplicates && r.duplicates.length) {
        const dups = document.createElement("span");
        dups.className = "dups";
        dups.textContent = `+${r.duplicates.length}`;
        dups.title = `${r.duplicates.length} near-duplicate${r.duplicates.length === 1 ? "" : "s"} folded into this one:\n${r.duplicates.join("\n")}`;
        tile.append(dups);
        tile.title += `\n+${r.duplicates.length} near-duplicate${r.duplicates.length === 1 ? "" : "s"}`;
      }
      if (r.kind === "video") {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = "▶ " + clock(r.timestamp);
        tile.append(badge);
        tile.title = `${r.name} at ${clock(r.timestamp)}\nscore ${r.score.toFixed(3)} · distance ${r.distance.toFixed(3)}`;
      }
      frag.append(tile);
    }
    els.grid.append(frag);
  }

  function sentinelVisible() {
    const r = els.sentinel.getBoundingClientRect();
    return r.top < window.innerHeight + 600;
  }

  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, { rootMargin: "600px 0px" }).observe(els.sentinel);

  async function uploadSearch(file) {
    if (!file) return;
    if (!file.type.startsWith("image/") && file.type !== "") {
      setMessage(`${file.name} is not an image`, true);
      return;
    }
    const max = info && info.limits ? info.limits.max_upload_bytes : null;
    if (max && file.size > max) {
      setMessage(`${file.name} is larger than the ${fmtBytes(max)} upload limit`, true);
      return;
    }
    cancelSearch();
    const mySeq = ++seq;
    search = null;
    els.grid.innerHTML = "";
    els.grid.classList.remove("stale");
    setMessage(`searching with ${file.name}…`);
    if (queryBlobUrl) URL.revokeObjectURL(queryBlobUrl);
    queryBlobUrl = URL.createObjectURL(file);
    els.queryThumb.src = queryBlobUrl;
    els.queryCaption.textContent = `photos like ${file.name}`;
    els.queryImage.hidden = false;
    const body = new FormData();
    body.append("file", file, file.name);
    const p = new URLSearchParams({ k: Math.min(PAGE, limit()) });
    if (els.collapse.checked) p.set("collapse", "true");
    const t = thresholdParam();
    if (t !== null) p.set("threshold", t);
    filterParams(p);
    try {
      const page = await api("/api/search/image?" + p.toString(), { method: "POST", body });
      if (mySeq !== seq) { els.grid.dataset.stale = ++stale; return; }
      search = { kind: "upload", value: page.upload_id, label: file.name, like: [], unlike: [], nextOffset: page.next_offset, results: [], seq: mySeq };
      showRefine();
      appendResults(page);
      describe(page);
      writeHash();
      if (sentinelVisible()) loadMore();
    } catch (e) {
      if (mySeq === seq) setMessage(e.message, true);
    } finally {
      els.file.value = "";
    }
  }

  // -- the URL fragment remembers the search (reload, back / forward) -------------------------
  let writingHash = false;
  function writeHash(typing) {
    if (!search) return;
    const p = new URLSearchParams();
    if (search.kind === "text") p.set("q", search.value);
    else if (search.kind === "image") p.set("image", search.value);
    else return; // an upload cannot be restored from a URL
    if (search.like.length) p.set("like", search.like.map((x) => x.id).join(","));
    if (search.unlike.length) p.set("unlike", search.unlike.map((x) => x.id).join(","));
    const t = thresholdParam();
    if (t !== null) p.set("t", t);
    if (limit() !== 60) p.set("n", limit());
    if (els.after.value) p.set("from", els.after.value);
    if (els.before.value) p.set("to", els.before.value);
    if (els.folder.value) p.set("in", els.folder.value);
    if (els.sort.value !== "score") p.set("sort", els.sort.value);
    els.clearFilters.hidden = !filtersOn();
    if (!els.collapse.checked) p.set("c", "0");
    const h = "#" + p.toString();
    if (typing) {
      // A run of typing is one history entry (the latest query), not one per keystroke.
      if (history.state && history.state.typing) history.replaceState({ typing: true }, "", h);
      else history.pushState({ typing: true }, "", h);
    } else if (location.hash !== h) {
      writingHash = true;
      location.hash = h;
    } else if (history.state && history.state.typing) {
      history.replaceState(null, "", h); // Enter on a typed query: the entry is kept, typing starts a new one
    }
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.has("t")) els.threshold.value = p.get("t");
    if (p.has("n")) els.limit.value = p.get("n");
    els.after.value = p.get("from") || "";
    els.before.value = p.get("to") || "";
    if (p.get("in") && ![...els.folder.options].some((o) => o.value === p.get("in"))) showFolders([p.get("in")]);
    els.folder.value = p.get("in") || "";
    els.sort.value = p.get("sort") === "date" ? "date" : "score";
    els.clearFilters.hidden = !filtersOn();
    els.collapse.checked = p.get("c") !== "0";
    showThreshold();
    const ids = (key) => (p.get(key) || "").split(",").filter((x) => /^\d+$/.test(x)).map((id) => ({ id, name: `photo ${id}` }));
    const refine = { like: ids("like"), unlike: ids("unlike") };
    if (p.get("q")) {
      els.q.value = p.get("q");
      startSearch("text", p.get("q"), undefined, false, refine);
    } else if (p.get("image") && /^\d+$/.test(p.get("image"))) {
      startSearch("image", p.get("image"), undefined, false, refine);
    } else if (search && search.kind !== "upload") { // back to before the search
      els.q.value = "";
      clearSearch();
    }
  }

  window.addEventListener("hashchange", () => {
    if (writingHash) { writingHash = false; return; }
    readHash();
  });

  // -- the viewer -----------------------------------------------------------------------------
  function showBox(box) {
    els.vBox.hidden = !box;
    if (!box) return;
    const [x0, y0, x1, y1] = box;
    els.vBox.style.left = `${x0 * 100}%`;
    els.vBox.style.top = `${y0 * 100}%`;
    els.vBox.style.width = `${(x1 - x0) * 100}%`;
    els.vBox.style.height = `${(y1 - y0) * 100}%`;
  }

  // The lines of text (OCR) that matched the query: outlined on the picture, and listed; and those
  // that hold a phrase the query subtracted ("invoice -draft"), listed: why the photo came last.
  function showMatchedText(matched, demotedBy) {
    els.vTextBoxes.replaceChildren();
    const lines = matched || [];
    const held = demotedBy || [];
    const quote = (ls) => ls.map((m) => `“${m.text}”`).join(" · ");
    els.vText.hidden = els.vTextLabel.hidden = !lines.length && !held.length;
    els.vText.textContent = [lines.length ? quote(lines) : "",
                             held.length ? `moved down: its text holds a subtracted phrase (${quote(held)})` : ""]
      .filter(Boolean).join("; ");
    for (const m of lines) {
      const [x0, y0, x1, y1] = m.box;
      const div = document.createElement("div");
      div.className = "text-box";
      div.title = m.text;
      Object.assign(div.style, { left: `${x0 * 100}%`, top: `${y0 * 100}%`,
                                 width: `${(x1 - x0) * 100}%`, height: `${(y1 - y0) * 100}%` });
      els.vTextBoxes.append(div);
    }
  }

  function stopVideo() {
    els.vVideo.pause();
    els.vVideo.removeAttribute("src");
    els.vVideo.load();
    els.vVideo.hidden = true;
  }

  async function openViewer(i) {
    if (!search || i < 0 || i >= search.results.length) return;
    viewerIndex = i;
    const r = search.results[i];
    const video = r.kind === "video";
    els.vName.textContent = r.name;
    els.vPath.textContent = r.path;
    els.vSize.textContent = [r.width && r.height ? `${r.width} × ${r.height} px` : "", fmtBytes(r.size)].filter(Boolean).join(" · ");
    els.vDate.textContent = r.taken && r.taken_source !== "mtime" ? `${fmtDate(r.taken)} (taken)` : fmtDate(r.modified);
    els.vCamera.textContent = r.camera || "";
    els.vCamera.hidden = els.vCameraLabel.hidden = !r.camera;
    els.vPlace.hidden = els.vPlaceLabel.hidden = !r.map;
    if (r.map) {
      els.vMap.href = r.map;
      els.vMap.textContent = `${r.lat.toFixed(5)}, ${r.lon.toFixed(5)} (map)`;
    }
    els.vScore.textContent = `${r.score.toFixed(4)} (distance ${r.distance.toFixed(4)}, rank ${r.rank})`;
    els.vWhen.hidden = els.vWhenLabel.hidden = !video;
    if (video) {
      const tr = r.time_range;
      els.vWhen.textContent = clock(r.timestamp) + (tr && clock(tr[0]) !== clock(tr[1]) ? ` (matches ${clock(tr[0])}–${clock(tr[1])})` : "");
    }
    els.vImg.alt = r.name;
    els.vImg.src = r.thumbnail || "";
    showBox(r.box);
    showMatchedText(r.matched, r.demoted_by);
    const at = video ? `#t=${(r.time_range ? r.time_range[0] : r.timestamp || 0).toFixed(1)}` : "";
    els.vOriginal.href = (r.original || "#") + at;
    els.vSimilar.hidden = els.vMore.hidden = els.vLess.hidden = r.image_id == null || video;
    stopVideo();
    els.vImg.hidden = false;
    els.vPrev.disabled = i === 0;
    els.vNext.disabled = i === search.results.length - 1;
    if (!els.viewer.open) els.viewer.showModal();
    if (video) {
      // The frame first (instant), then the player, starting at the matching moment.
      els.vImg.src = r.thumbnail.replace(/([?&])size=\d+&?/, "$1") + "&size=1024";
      els.vVideo.src = r.original + `#t=${(r.timestamp || 0).toFixed(3)}`;
      els.vVideo.addEventListener("loadeddata", () => {
        if (viewerIndex !== i) return;
        els.vImg.hidden = true;
        els.vVideo.hidden = false;
      }, { once: true });
      if (i >= search.results.length - 3) loadMore();
      return;
    }
    if (r.image_id == null) return;
    try {
      const meta = await api(`/api/images/${r.image_id}`);
      if (viewerIndex !== i) return;
      els.vImg.src = meta.preview;
      els.vSize.textContent = [meta.width && meta.height ? `${meta.width} × ${meta.height} px` : "", fmtBytes(meta.size)].filter(Boolean).join(" · ");
      els.vDate.textContent = r.taken && r.taken_source !== "mtime" ? `${fmtDate(r.taken)} (taken)`
        : meta.taken ? `${fmtDate(meta.taken)} (taken)` : `${fmtDate(meta.modified)} (modified)`;
      els.vPath.textContent = meta.path;
    } catch (e) {
      els.vDate.textContent = e.message;
    }
    if (i >= search.results.length - 3) loadMore();
  }

  function moreLikeThis() {
    if (viewerIndex < 0 || !search) return;
    const r = search.results[viewerIndex];
    if (r.image_id == null || r.kind === "video") return;
    els.viewer.close();
    els.q.value = "";
    startSearch("image", String(r.image_id), r.name);
  }

  // "More like this" / "Less like this": the viewed photo joins the current search, added or
  // subtracted (again: it moves from one list to the other); the results are searched again.
  function refineWith(sign) {
    if (viewerIndex < 0 || !search) return;
    const r = search.results[viewerIndex];
    if (r.image_id == null || r.kind === "video") return;
    const id = String(r.image_id);
    const like = search.like.filter((x) => x.id !== id), unlike = search.unlike.filter((x) => x.id !== id);
    (sign > 0 ? like : unlike).push({ id, name: r.name });
    els.viewer.close();
    startSearch(search.kind, search.value, search.label, false, { like, unlike });
  }

  function showRefine() {
    const like = search ? search.like : [], unlike = search ? search.unlike : [];
    els.refine.hidden = !(like.length || unlike.length);
    const names = (xs) => xs.map((x) => x.name).join(", ");
    els.refineText.textContent = [like.length ? `more like ${names(like)}` : "", unlike.length ? `less like ${names(unlike)}` : ""]
      .filter(Boolean).join(" · ");
  }

  els.vMore.addEventListener("click", () => refineWith(1));
  els.vLess.addEventListener("click", () => refineWith(-1));
  els.refineClear.addEventListener("click", () => {
    if (search) startSearch(search.kind, search.value, search.label);
  });
  els.vSimilar.addEventListener("click", moreLikeThis);
  els.vClose.addEventListener("click", () => els.viewer.close());
  els.vPrev.addEventListener("click", () => openViewer(viewerIndex - 1));
  els.vNext.addEventListener("click", () => openViewer(viewerIndex + 1));
  els.viewer.addEventListener("click", (e) => { if (e.target === els.viewer) els.viewer.close(); });
  els.viewer.addEventListener("close", () => {
    stopVideo();
    const tile = els.grid.querySelector(`.tile[data-index="${viewerIndex}"]`);
    if (tile) tile.focus();
  });
  els.viewer.addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft") { e.preventDefault(); openViewer(viewerIndex - 1); }
    else if (e.key === "ArrowRight") { e.preventDefault(); openViewer(viewerIndex + 1); }
    else if (e.key === "m" || e.key === "M") { e.preventDefault(); moreLikeThis(); }
    else if (e.key === "+") { e.preventDefault(); refineWith(1); }
    else if (e.key === "-") { e.preventDefault(); refineWith(-1); }
  });

  // -- grid keyboard navigation ---------------------------------------------------------------
  function columns() {
    return getComputedStyle(els.grid).gridTemplateColumns.split(" ").filter(Boolean).length || 1;
  }

  els.grid.addEventListener("click", (e) => {
    const tile = e.target.closest(".tile");
    if (tile) openViewer(parseInt(tile.dataset.index, 10));
  });
  els.grid.addEventListener("keydown", (e) => {
    const tile = e.target.closest(".tile");
    if (!tile) return;
    const i = parseInt(tile.dataset.index, 10);
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() }[e.key];
    if (step === undefined) return;
    e.preventDefault();
    const next = els.grid.querySelector(`.tile[data-index="${i + step}"]`);
    if (next) { next.focus(); next.scrollIntoView({ block: "nearest" }); }
    else if (step > 0) loadMore();
  });

  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement !== els.q && !els.viewer.open) {
      e.preventDefault();
      els.q.focus();
      els.q.select();
    } else if (e.key === "ArrowDown" && document.activeElement === els.q) {
      const first = els.grid.querySelector(".tile");
      if (first) { e.preventDefault(); first.focus(); }
    }
  });

  // -- inputs ---------------------------------------------------------------------------------
  els.form.addEventListener("submit", (e) => {
    e.preventDefault();
    clearTimeout(typeTimer);
    const q = els.q.value.trim();
    if (!q) { setMessage("type what you are looking for, e.g. “a dog on a beach”"); return; }
    if (sameQuery(q)) { writeHash(); return; } // already shown or on its way: no second request
    els.queryImage.hidden = true;
    startSearch("text", q);
  });

  // Search as you type.
  function sameQuery(q) {
    return search && search.kind === "text" && search.value === q && !search.failed;
  }

  els.q.addEventListener("input", () => {
    clearTimeout(typeTimer);
    const q = els.q.value.trim();
    if (!q) { if (search && search.kind === "text") clearSearch(); return; }
    typeTimer = setTimeout(() => {
      typeTimer = null;
      if (sameQuery(q)) return; // e.g. a space typed, or a letter typed and deleted
      els.queryImage.hidden = true;
      startSearch("text", q, undefined, true);
    }, TYPE_DELAY);
  });
  els.file.addEventListener("change", () => uploadSearch(els.file.files[0]));
  els.threshold.addEventListener("input", showThreshold);
  els.threshold.addEventListener("change", rerun);
  els.limit.addEventListener("change", rerun);
  for (const el of [els.after, els.before, els.folder, els.sort]) el.addEventListener("change", () => { els.clearFilters.hidden = !filtersOn(); rerun(); });
  els.clearFilters.addEventListener("click", () => {
    els.after.value = els.before.value = els.folder.value = "";
    els.sort.value = "score";
    els.clearFilters.hidden = true;
    rerun();
  });
  els.collapse.addEventListener("change", rerun);

  function rerun() {
    if (!search) return;
    if (search.kind === "upload") {
      cancelSearch();
      search = Object.assign({}, search, { nextOffset: 0, results: [], seq: ++seq, loading: false, controller: null, replace: false, failed: false });
      els.grid.innerHTML = "";
      loadMore();
    } else {
      startSearch(search.kind, search.value, search.label, false, search);
    }
  }

  // Drag and drop a photo anywhere on the page.
  let dragDepth = 0;
  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  document.addEventListener("dragenter", (e) => { if (hasFiles(e)) { dragDepth++; els.drop.hidden = false; } });
  document.addEventListener("dragleave", () => { if (--dragDepth <= 0) { dragDepth = 0; els.drop.hidden = true; } });
  document.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    els.drop.hidden = true;
    uploadSearch(e.dataTransfer.files[0]);
  });

  // -- start ----------------------------------------------------------------------------------
  // `/?q=dog` (a typed or shared link) means `/#q=dog`: move it into the fragment, which holds
  // the page's state; the fragment wins when both are given.
  function queryToHash() {
    const given = new URLSearchParams(location.search);
    const p = new URLSearchParams();
    for (const key of ["q", "image", "like", "unlike", "t", "n", "from", "to", "in", "sort", "c"]) if (given.get(key)) p.set(key, given.get(key));
    if (!p.toString() || location.hash.length > 1) return;
    history.replaceState(null, "", location.pathname + "#" + p.toString());
  }

  queryToHash();
  loadInfo().then(() => {
    if (location.hash.length > 1 && !search) readHash();
    else showThreshold();
  });
})();
