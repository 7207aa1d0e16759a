// Every console page: times in the browser's time zone, live parts of a page kept current
// over Server-Sent Events (see broker/console/events.py), and the knowledge-base editor's
// preview where the page has the editor (kb_editor.js). Loaded as a module under
// a CSP without inline script; all page text comes from the server's templates.

import { startEditor } from "./kb_editor.js";

const lang = document.documentElement.lang || "en";

export function localTimes(root = document) {
  const fmt = new Intl.DateTimeFormat(lang, { dateStyle: "short", timeStyle: "short" });
  for (const el of root.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      el.title = el.textContent;
      el.textContent = fmt.format(when);
    }
  }
}

function banner(text, kind) {
  const el = document.getElementById("live-banner");
  if (!el) return;
  el.textContent = text;
  el.className = `live-banner live-banner-${kind}`;
  el.hidden = false;
}

function startLive(holder) {
  const source = new EventSource(`/console/events?${holder.dataset.live}`);
  const indicator = document.querySelector("[data-live-indicator]");
  source.addEventListener("open", () => {
    if (indicator) indicator.hidden = false;
  });
  source.addEventListener("update", (event) => {
    const { target, html } = JSON.parse(event.data);
    const el = document.getElementById(target);
    if (!el) return;
    // The HTML comes from the server's autoescaping templates, never from outside text.
    el.innerHTML = html;
    localTimes(el);
    document.dispatchEvent(new CustomEvent("console:updated", { detail: { target } }));
  });
  source.addEventListener("signed_out", () => {
    source.close();
    banner(document.body.dataset.signedOut || "Signed out", "error");
    window.location.assign("/console/login");
  });
  source.addEventListener("gone", () => {
    source.close();
    if (indicator) indicator.hidden = true;
  });
  source.addEventListener("error", async () => {
    if (indicator) indicator.hidden = true;
    if (source.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
    // A refused reconnect closes the stream for good: find out whether we were signed out.
    const me = await fetch("/api/v1/me", { credentials: "same-origin" }).catch(() => null);
    if (me && me.status === 401) window.location.assign("/console/login");
  });
  window.addEventListener("pagehide", () => source.close());
}

function init() {
  localTimes();
  const holder = document.querySelector("[data-live]");
  if (holder && holder.dataset.live) startLive(holder);
  const editor = document.querySelector("form[data-kb-editor]");
  if (editor) startEditor(editor);
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", init);
} else {
  init();
}
