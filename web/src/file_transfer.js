// The terminal page's transfer panel: download a file of the machine by path, upload one
// (button or drag and drop) to a path. Each transfer is a POST to
// /files/sessions/{session}/upload|download?path=… (cookie + X-CSRF-Token), which the broker
// runs as a file session of its own on the same ticket and machine (docs/console.md).
//
// Progress comes from the bytes that went through: the upload's from the request body sent
// (XMLHttpRequest's upload events: the broker reads the body only as fast as the machine
// takes it), the download's from the response body read against X-Secondline-Size.
import { safeText } from "./safe_text.js";

const MAX_PATH_BYTES = 1024;

function humanSize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

// What the broker refuses, said before asking it (it checks again).
function pathProblem(path, t) {
  if (!path) return t("filePathMissing");
  if (new TextEncoder().encode(path).length > MAX_PATH_BYTES) return t("filePathLong");
  // C0, DEL, C1, line and paragraph separators.
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/u.test(path)) return t("filePathControl");
  if (path.endsWith("/")) return t("filePathDirectory");
  return "";
}

function errorOf(status, text) {
  try {
    const message = JSON.parse(text)?.error?.message;
    if (message) return message.charAt(0).toUpperCase() + message.slice(1);
  } catch {
    // not the broker's JSON: a proxy's page, say the status
  }
  return `HTTP ${status}`;
}

export function setUpTransfers({ t, csrf, session }) {
  const panel = document.getElementById("files-panel");
  const toggle = document.getElementById("btn-files");
  if (!panel || !toggle) return;
  const list = document.getElementById("transfers");
  const downloadForm = document.getElementById("download-form");
  const downloadPath = document.getElementById("download-path");
  const uploadForm = document.getElementById("upload-form");
  const uploadPath = document.getElementById("upload-path");
  const fileInput = document.getElementById("upload-file");
  const fileName = document.getElementById("upload-name");
  const dropZone = document.getElementById("drop-zone");
  let chosen = null;

  toggle.addEventListener("click", () => {
    panel.hidden = !panel.hidden;
    toggle.setAttribute("aria-expanded", String(!panel.hidden));
  });

  function url(way, path) {
    return `/files/sessions/${encodeURIComponent(session())}/${way}?path=${encodeURIComponent(path)}`;
  }

  // One row of the list: direction, path, a progress bar, and what became of it.
  function row(way, path) {
    const li = document.createElement("li");
    li.className = "transfer";
    li.dataset.way = way;
    li.dataset.state = "running";
    const name = document.createElement("span");
    name.className = "transfer-name mono";
    name.textContent = `${way === "upload" ? "↑" : "↓"} ${safeText(path, 200)}`;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    const info = document.createElement("span");
    info.className = "transfer-info";
    info.textContent = t("fileStarting");
    li.append(name, bar, info);
    list.prepend(li);
    return {
      progress(done, total) {
        bar.max = total || 1;
        bar.value = done;
        info.textContent = total
          ? `${humanSize(done)} / ${humanSize(total)} (${Math.floor((done * 100) / total)} %)`
          : humanSize(done);
      },
      // The upload's answer carries the SHA-256 the broker computed; both directions name
      // the file session whose transcript records it (a download's digest is there).
      done(size, sha256, sessionId) {
        li.dataset.state = "done";
        li.dataset.session = sessionId;
        bar.max = 1;
        bar.value = 1;
        info.textContent = `${humanSize(size)} · `;
        if (sha256) {
          const digest = document.createElement("code");
          digest.className = "transfer-sha";
          digest.textContent = sha256;
          info.append("SHA-256 ", digest, " · ");
        }
        const link = document.createElement("a");
        link.href = `/console/sessions/${encodeURIComponent(sessionId)}/play`;
        link.textContent = `${t("fileRecorded")} ${sessionId}`;
        info.append(link);
      },
      failed(message) {
        li.dataset.state = "failed";
        info.textContent = safeText(message, 400);
      },
    };
  }

  function choose(file) {
    chosen = file;
    fileName.textContent = file ? `${safeText(file.name, 80)} (${humanSize(file.size)})` : "";
    if (file && !uploadPath.value.trim()) uploadPath.value = file.name;
  }

  fileInput.addEventListener("change", () => choose(fileInput.files[0] || null));
  for (const kind of ["dragenter", "dragover"]) {
    dropZone.addEventListener(kind, (event) => {
      event.preventDefault();
      dropZone.dataset.over = "yes";
    });
  }
  dropZone.addEventListener("dragleave", () => delete dropZone.dataset.over);
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    delete dropZone.dataset.over;
    const file = event.dataTransfer?.files?.[0];
    if (file) choose(file);
  });

  uploadForm.addEventListener("submit", (event) => {
    event.preventDefault();
    let path = uploadPath.value.trim();
    if (chosen && path.endsWith("/")) path += chosen.name; // a directory: keep the name
    const item = row("upload", path || "?");
    if (!chosen) return item.failed(t("fileNone"));
    const problem = pathProblem(path, t) || (session() ? "" : t("fileNoSession"));
    if (problem) return item.failed(problem);
    const file = chosen;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url("upload", path));
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => item.progress(e.loaded, file.size));
    xhr.addEventListener("load", () => {
      if (xhr.status !== 200) return item.failed(errorOf(xhr.status, xhr.responseText));
      try {
        const answer = JSON.parse(xhr.responseText);
        item.done(answer.size, safeText(answer.sha256, 64), safeText(answer.session, 24));
      } catch {
        item.failed(`HTTP ${xhr.status}`);
      }
    });
    xhr.addEventListener("error", () => item.failed(t("fileBroken")));
    xhr.send(file);
  });

  downloadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const path = downloadPath.value.trim();
    const item = row("download", path || "?");
    const problem = pathProblem(path, t) || (session() ? "" : t("fileNoSession"));
    if (problem) return item.failed(problem);
    let response;
    try {
      response = await fetch(url("download", path), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
      });
    } catch {
      return item.failed(t("fileBroken"));
    }
    if (!response.ok) return item.failed(errorOf(response.status, await response.text()));
    const total = Number(response.headers.get("X-Secondline-Size") || 0);
    // The browser keeps the pieces (a Blob may live on its disk) until they are saved.
    const pieces = [];
    let got = 0;
    try {
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        pieces.push(value);
        got += value.length;
        item.progress(got, total);
      }
    } catch {
      return item.failed(t("fileBroken"));
    }
    // Short of the announced size: broken off (a file that grew while read, a log, is longer).
    if (got < total) return item.failed(t("fileBroken"));
    const blob = new Blob(pieces, { type: "application/octet-stream" });
    item.done(got, "", safeText(response.headers.get("X-Secondline-Session") || "", 24));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = path.split("/").pop() || "download";
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  });
}
