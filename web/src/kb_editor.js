// The article editor's live preview. A moment after typing stops, a Markdown field is sent
// to the server's safe renderer (POST /console/kb/preview with the session's CSRF token) and
// its answer is shown beside the field. No Markdown becomes HTML in the browser: the HTML is
// the knowledge base's own rendering (markdown-it without raw HTML, then nh3's allow-list),
// the very HTML readers get, and the page's CSP allows no inline script besides.

const DELAY_MS = 350;

function csrfToken(form) {
  const field = form.querySelector("input[name=_csrf]");
  if (field) return field.value;
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function render(url, csrf, text) {
  const response = await fetch(url, {
    method: "POST",
    body: new URLSearchParams({ _csrf: csrf, text }),
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  // A refusal (signed out, stale token) answers with a page, not JSON: that throws too.
  const data = await response.json();
  if (!response.ok || typeof data.html !== "string") {
    throw new Error(data.error || `preview refused (${response.status})`);
  }
  return data.html;
}

function watch(field, target, url, csrf, failed) {
  let timer = 0;
  let sent = 0;
  let shown = 0;
  field.addEventListener("input", () => {
    target.dataset.stale = "";
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++sent;
      try {
        const html = await render(url, csrf, field.value);
        if (mine < shown) return; // a slow answer never replaces a newer one
        shown = mine;
        // Sanitised on the server by the KB's renderer; see the comment at the top.
        target.innerHTML = html;
        delete target.dataset.stale;
        target.dataset.previewed = String(mine);
        if (failed) failed.hidden = true;
      } catch {
        if (failed) failed.hidden = false;
      }
    }, DELAY_MS);
  });
}

export function startEditor(form) {
  const url = form.dataset.previewUrl;
  if (!url) return;
  const csrf = csrfToken(form);
  const failed = form.querySelector("[data-preview-state]");
  for (const field of form.querySelectorAll("textarea[data-preview]")) {
    const target = document.getElementById(field.dataset.preview);
    if (target) watch(field, target, url, csrf, failed);
  }
}
