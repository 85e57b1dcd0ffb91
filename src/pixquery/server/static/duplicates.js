// The duplicates page: groups of copies from GET /api/duplicates, side by side, with the one to
// keep marked. Plain JavaScript, no build step. It only shows: pixquery never deletes a photo.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = { form: $("find"), threshold: $("threshold"), keep: $("keep"), exact: $("exact"),
                summary: $("summary"), groups: $("groups"), more: $("more") };
  const PAGE = 20;
  let nextOffset = null;
  let seq = 0;

  async function api(url) {
    const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      if (res.status === 401) throw new Error("This server needs a token: open the URL printed by `pixquery serve`.");
      throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
    }
    return body;
  }

  function fmtBytes(n) {
    const units = ["bytes", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + units[i];
  }

  function fmtDate(iso) {
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function params(offset) {
    const p = new URLSearchParams({ keep: els.keep.value, limit: PAGE, offset });
    if (els.threshold.value !== "") p.set("threshold", els.threshold.value);
    if (els.exact.checked) p.set("exact_only", "true");
    return p;
  }

  // The form's state lives in the URL fragment (reload, share): #t=0.08&keep=oldest&exact=1
  function writeHash() {
    const p = new URLSearchParams();
    if (els.threshold.value !== "") p.set("t", els.threshold.value);
    if (els.keep.value !== "largest") p.set("keep", els.keep.value);
    if (els.exact.checked) p.set("exact", "1");
    history.replaceState(null, "", p.toString() ? "#" + p.toString() : location.pathname);
  }

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    if (p.has("t")) els.threshold.value = p.get("t");
    if (p.has("keep")) els.keep.value = p.get("keep");
    els.exact.checked = p.get("exact") === "1";
  }

  function member(m) {
    const card = el("figure", "dup-member" + (m.keep ? " keep" : ""));
    card.dataset.imageId = m.image_id;
    card.title = m.path;
    const link = el("a");
    link.href = m.original;
    link.target = "_blank";
    link.rel = "noopener";
    const img = el("img");
    img.src = m.thumbnail;
    img.alt = m.name;
    img.loading = "lazy";
    link.append(img);
    const role = m.keep ? "keep (suggested)" : m.same_content_as_keep ? "same bytes" : "near-duplicate";
    const dist = m.distance == null || m.keep || m.same_content_as_keep ? "" : ` · distance ${m.distance.toFixed(4)}`;
    const caption = el("figcaption");
    caption.append(el("span", "role", role + dist), el("span", "name", m.name),
                   el("span", "facts", [m.width && m.height ? `${m.width} × ${m.height} px` : "", fmtBytes(m.size)].filter(Boolean).join(" · ")),
                   el("span", "date", `${fmtDate(m.date_iso)} (${m.date_source})`), el("span", "path", m.path));
    card.append(link, caption);
    return card;
  }

  function group(g, n) {
    const box = el("section", "dup-group");
    box.dataset.kind = g.kind;
    const title = el("h2", null, `${n}. ${g.count} photos `);
    title.append(el("span", "kind", g.kind === "exact" ? "exact copies" : "near-duplicates"),
                 ` · ${fmtBytes(g.reclaimable_bytes)} in the copies`);
    const row = el("div", "dup-members");
    for (const m of g.members) row.append(member(m));
    box.append(title, row);
    return box;
  }

  async function load(offset) {
    const mine = ++seq;
    if (!offset) {
      els.groups.innerHTML = "";
      delete els.groups.dataset.loaded; // set again (to the number of groups shown) when the answer is in
      els.summary.classList.remove("error");
      els.summary.textContent = "looking for duplicates… (a large library takes a while the first time)";
    }
    els.more.hidden = true;
    try {
      const page = await api("/api/duplicates?" + params(offset).toString());
      if (mine !== seq) return;
      const frag = document.createDocumentFragment();
      page.groups.forEach((g, i) => frag.append(group(g, offset + i + 1)));
      els.groups.append(frag);
      nextOffset = page.next_offset;
      els.more.hidden = nextOffset == null;
      if (els.threshold.value === "" && page.near) els.threshold.placeholder = String(page.threshold);
      const what = page.near ? `exact copies and near-duplicates within distance ${page.threshold} (cosine ${page.threshold_cosine.toFixed(3)})` : "exact copies";
      els.summary.textContent = page.groups_count
        ? `${page.groups_count} groups, ${page.duplicates} copies, ${fmtBytes(page.reclaimable_bytes)} in the copies: ${what}, ` +
          `suggesting the ${page.keep_rule.replace("-", " ")} of each to keep. ${page.photos.toLocaleString()} photos compared.`
        : `no duplicates: ${what}.`;
      els.groups.dataset.loaded = els.groups.childElementCount;
    } catch (e) {
      if (mine !== seq) return;
      els.summary.textContent = e.message;
      els.summary.classList.add("error");
    }
  }

  els.form.addEventListener("submit", (e) => {
    e.preventDefault();
    writeHash();
    load(0);
  });
  els.keep.addEventListener("change", () => { writeHash(); load(0); });
  els.exact.addEventListener("change", () => { writeHash(); load(0); });
  els.more.addEventListener("click", () => { if (nextOffset != null) load(nextOffset); });

  readHash();
  load(0);
})();
