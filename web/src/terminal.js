// The terminal page: xterm.js over the broker's terminal WebSocket.
//
// Connection: POST /api/v1/sessions/terminal-tickets (cookie + X-CSRF-Token) gives a one-time
// ticket; the first WebSocket message carries it, so no credential is ever part of a URL.
// Binary frames carry terminal bytes both ways; text frames carry JSON control messages.
//
// What output from the remote machine can NOT do here: set the clipboard (no OSC 52 handler,
// no clipboard addon), open a URL without a click and a confirmation (hyperlinks go through
// linkHandler; no web-links addon), or change anything outside the terminal (the title is
// shown as plain, cleaned text).
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { bridgeStyleElements } from "./style_bridge.js";
import { safeText } from "./safe_text.js";
import { setUpTransfers } from "./file_transfer.js";

const app = document.getElementById("terminal-app");
const t = (key) => app.dataset[`t${key[0].toUpperCase()}${key.slice(1)}`] || key;
const mode = app.dataset.mode;
const readOnly = mode === "observe";
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

const stateEl = document.getElementById("term-state");
const overlay = document.getElementById("term-overlay");
const overlayTitle = document.getElementById("overlay-title");
const overlayReason = document.getElementById("overlay-reason");
const overlaySpinner = document.getElementById("overlay-spinner");
const overlayLinks = document.getElementById("overlay-links");
const overlayPlay = document.getElementById("overlay-play");
const participantsEl = document.getElementById("participants");
const noticeEl = document.getElementById("term-notice");
const inviteForm = document.getElementById("invite-form");
const inviteName = document.getElementById("invite-name");

let sessionId = app.dataset.session || "";
let socket = null;
let ended = false;
function texts(json) {
  try {
    return JSON.parse(json || "{}");
  } catch {
    return {};
  }
}
const endTexts = texts(app.dataset.endTexts);
const refusalTexts = texts(app.dataset.refusalTexts);

// How it ended or why it was refused, in the viewer's language, from the broker's code;
// the broker's own sentence when the page has no text for that code.
function endText(code, by, fallback, refused = false) {
  let key = code;
  const mine = by && by === app.dataset.me;
  if ((code === "ended_by_owner" || code === "killed") && mine) key = "you";
  const text = refused ? refusalTexts[key] : endTexts[key];
  // The broker's sentences start in lower case (they follow "secondline: " on SSH).
  if (!text) return fallback ? fallback.charAt(0).toUpperCase() + fallback.slice(1) : "";
  return text
    .replaceAll("{by}", safeText(by || "", 64))
    .replaceAll("{agent}", app.dataset.agentName || app.dataset.agent || "")
    .replaceAll("{ticket}", app.dataset.ticket || "");
}

bridgeStyleElements();

const term = new Terminal({
  allowProposedApi: false,
  convertEol: false,
  cursorBlink: !readOnly,
  fontFamily: '"DejaVu Sans Mono", "Cascadia Mono", Menlo, Consolas, "Noto Color Emoji", monospace',
  fontSize: 14,
  lineHeight: 1.15,
  scrollback: 5000,
  theme: {
    background: "#0b1220",
    foreground: "#e2e8f0",
    cursor: "#5eead4",
    selectionBackground: "#334155",
    black: "#1e293b", red: "#f87171", green: "#4ade80", yellow: "#facc15",
    blue: "#60a5fa", magenta: "#c084fc", cyan: "#22d3ee", white: "#e2e8f0",
    brightBlack: "#64748b", brightRed: "#fca5a5", brightGreen: "#86efac",
    brightYellow: "#fde047", brightBlue: "#93c5fd", brightMagenta: "#d8b4fe",
    brightCyan: "#67e8f9", brightWhite: "#f8fafc",
  },
  linkHandler: {
    // Two guards: xterm.js drops non-http(s) hyperlinks, and activate checks again.
    allowNonHttpProtocols: false,
    activate(event, uri) {
      event.preventDefault();
      const text = safeText(uri, 300);
      if (!/^https?:\/\//i.test(text)) return;
      if (window.confirm(`${t("link")}\n\n${text}`)) {
        window.open(text, "_blank", "noopener,noreferrer");
      }
    },
  },
});
// OSC 52 (set clipboard) is swallowed explicitly: remote output never reaches the clipboard.
term.parser.registerOscHandler(52, () => true);

// Answer-back: xterm.js answers some queries in the output (cursor position, device
// attributes, modes, DECRQSS, colours, window size) through onData, as if typed. Those
// answers go to the broker as {"type": "reply"} messages, so the transcript records them as
// terminal replies, never as what staff typed. Each query's handler marks the data that
// follows in the same parsing turn as a reply and lets xterm.js answer (returns false); no
// keystroke can come in the middle of a synchronous parse, and the mark ends with the turn.
let answering = false;
function answerFollows() {
  if (!answering) {
    answering = true;
    queueMicrotask(() => {
      answering = false;
    });
  }
  return false;
}
for (const id of [
  { final: "c" }, // DA1
  { prefix: ">", final: "c" }, // DA2
  { final: "n" }, // DSR (status, cursor position)
  { prefix: "?", final: "n" }, // DECDSR
  { intermediates: "$", final: "p" }, // DECRQM
  { prefix: "?", intermediates: "$", final: "p" }, // DECRQM (private modes)
  { final: "t" }, // window size reports
  { prefix: "?", final: "h" }, // DECSET 1004 answers with the focus state at once
]) {
  term.parser.registerCsiHandler(id, answerFollows);
}
term.parser.registerDcsHandler({ intermediates: "$", final: "q" }, answerFollows); // DECRQSS
for (const ident of [4, 10, 11, 12]) term.parser.registerOscHandler(ident, answerFollows);
// Focus reports (CSI I / CSI O, when the session asked for them) are answers too: xterm.js
// sends them from its focus handlers, which run after these capturing listeners.
const focusAnswers = (event) => {
  if (event.target === term.textarea) answerFollows();
};
const fit = new FitAddon();
term.loadAddon(fit);
term.open(document.getElementById("terminal-screen"));
term.element.addEventListener("focus", focusAnswers, true);
term.element.addEventListener("blur", focusAnswers, true);
fit.fit();
window.secondlineTerminal = term; // for the browser tests: the buffer is read, not driven

term.onTitleChange((title) => {
  const clean = safeText(title, 80);
  document.title = clean ? `${clean} · Secondline` : document.title;
});

function setState(state, reason = "") {
  stateEl.dataset.state = state;
  app.dataset.state = state;
  const labels = {
    connecting: t("connecting"),
    waiting_consent: t("waiting"),
    running: t("running"),
    ended: t("ended"),
    refused: t("refused"),
    lost: t("lost"),
    signed_out: t("signedOut"),
  };
  const short = { waiting_consent: t("waitingShort") };
  stateEl.textContent = short[state] || labels[state] || state;
  const showOverlay = state !== "running";
  overlay.hidden = !showOverlay;
  overlay.dataset.state = state;
  overlayTitle.textContent = labels[state] || state;
  // The waiting text says it all; other states show the reason, already in the viewer's
  // language (endText).
  overlayReason.textContent =
    state === "waiting_consent" ? t("waitingHint") : safeText(reason, 400);
  overlaySpinner.hidden = !(state === "connecting" || state === "waiting_consent");
  const final = ["ended", "refused", "lost", "signed_out"].includes(state);
  overlayLinks.hidden = !final;
  if (final) {
    // Nothing left to invite to, paste into or end.
    if (inviteForm) inviteForm.hidden = true;
    for (const id of ["btn-paste", "btn-leave"]) {
      const button = document.getElementById(id);
      if (button) button.disabled = true;
    }
  }
  // A refused session has no transcript to play.
  if (final && sessionId && state !== "refused") {
    overlayPlay.href = `/console/sessions/${encodeURIComponent(sessionId)}/play`;
    overlayPlay.hidden = false;
  }
  if (state === "running") term.focus();
}

function showNotice(text) {
  noticeEl.textContent = safeText(text, 200);
  noticeEl.hidden = false;
}

function showParticipants(list) {
  participantsEl.replaceChildren();
  const me = app.dataset.me;
  // Whoever controls the session now (it may have been handed over) invites and hands on.
  const inControl =
    Array.isArray(list) && list.some((p) => p.name === me && p.role === "owner");
  if (inviteForm) inviteForm.hidden = !inControl;
  for (const person of Array.isArray(list) ? list.slice(0, 20) : []) {
    const li = document.createElement("li");
    const role = safeText(person.role, 16);
    li.className = `participant participant-${role.replace(/[^a-z]/g, "")}`;
    li.textContent = safeText(person.name, 64);
    const badge = document.createElement("span");
    badge.className = "participant-role";
    badge.textContent = t(`role${role.charAt(0).toUpperCase()}${role.slice(1)}`);
    li.append(" ", badge);
    if (app.dataset.canHandOver === "yes" && inControl && role === "joiner" && person.name !== me) {
      const give = document.createElement("button");
      give.type = "button";
      give.className = "btn btn-dark btn-small";
      give.textContent = t("handOver");
      give.addEventListener("click", () => handOver(person.name));
      li.append(" ", give);
    }
    participantsEl.append(li);
  }
}

async function api(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = data?.error?.message || `HTTP ${response.status}`;
    const error = new Error(message);
    error.code = data?.error?.code || "";
    throw error;
  }
  return data;
}

async function handOver(name) {
  if (!sessionId) return;
  try {
    await api(`/api/v1/sessions/${encodeURIComponent(sessionId)}/control`, { to: name });
  } catch (error) {
    showNotice(error.message);
  }
}

async function invite(event) {
  event.preventDefault();
  const name = inviteName.value.trim();
  if (!sessionId || !name) return;
  try {
    await api(`/api/v1/sessions/${encodeURIComponent(sessionId)}/invite`, { user: name });
    showNotice(`${t("invited")}: ${name}`);
    inviteName.value = "";
  } catch (error) {
    showNotice(error.message);
  }
  term.focus();
}

if (inviteForm) inviteForm.addEventListener("submit", invite);

// Transfers go to the session this page shows once it runs (its id comes with "running").
setUpTransfers({ t, csrf, session: () => (app.dataset.state === "running" ? sessionId : "") });

// The broker closes the terminal (1009) on a message over 64 KiB: a long paste goes out in
// pieces of at most that size, in order, as typing would.
const MAX_MESSAGE = 65536;

function send(data) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  if (typeof data === "string" || data.length <= MAX_MESSAGE) {
    socket.send(data);
    return;
  }
  for (let at = 0; at < data.length; at += MAX_MESSAGE) {
    socket.send(data.subarray(at, at + MAX_MESSAGE));
  }
}

function sendResize() {
  app.dataset.size = `${term.cols}x${term.rows}`;
  send(JSON.stringify({ type: "resize", cols: term.cols, rows: term.rows }));
}

async function connect() {
  setState("connecting");
  let ticket;
  try {
    const minted = await api(app.dataset.ticketsApi, {
      ticket_id: app.dataset.ticket || null,
      agent: app.dataset.agent || null,
      mode,
      session: sessionId || null,
      cols: term.cols,
      rows: term.rows,
    });
    ticket = minted.ticket;
  } catch (error) {
    ended = true;
    setState("refused", endText(error.code, "", error.message, true));
    return;
  }
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${window.location.host}${app.dataset.ws}`);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => socket.send(JSON.stringify({ ticket })));
  socket.addEventListener("message", (event) => {
    if (typeof event.data !== "string") {
      term.write(new Uint8Array(event.data));
      return;
    }
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "state") {
      if (message.session) {
        sessionId = safeText(message.session, 24);
        app.dataset.session = sessionId;
      }
      if (message.state === "ended") {
        ended = true;
        let reason = endText(
          message.code || "",
          message.by || "",
          message.reason || "",
          Boolean(message.refused),
        );
        // A kill's reason, in the words of whoever gave it.
        if (message.detail) reason += ` — ${safeText(message.detail, 200)}`;
        setState(message.refused ? "refused" : "ended", reason);
      } else {
        setState(message.state, message.reason || "");
      }
      if (message.state === "running") sendResize();
    } else if (message.type === "participants") {
      showParticipants(message.list);
    } else if (message.type === "notice") {
      noticeEl.textContent = safeText(message.message, 200);
      noticeEl.hidden = false;
    }
  });
  socket.addEventListener("close", (event) => {
    if (ended) return;
    ended = true;
    const signedOut = event.reason === "signed_out";
    setState(signedOut ? "signed_out" : "lost", signedOut ? "" : t("lostHint"));
  });
}

// An observer's keys are sent too: the broker drops them (observers never type) and says so
// once, which the bar shows. The broker decides, not this page.
term.onData((data) => {
  if (answering) {
    send(JSON.stringify({ type: "reply", data }));
    return;
  }
  send(new TextEncoder().encode(data));
});
term.onBinary((data) => {
  const bytes = Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff);
  send(bytes);
});
term.onResize(() => sendResize());
new ResizeObserver(() => fit.fit()).observe(document.getElementById("terminal-screen"));

async function copySelection() {
  const text = term.getSelection();
  if (!text) return;
  await navigator.clipboard.writeText(text);
  stateEl.dataset.flash = t("copied");
  term.focus();
}

async function pasteClipboard() {
  if (readOnly) return;
  const text = await navigator.clipboard.readText();
  if (text) term.paste(text);
  term.focus();
}

term.attachCustomKeyEventHandler((event) => {
  if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
  if (event.code === "KeyC") {
    void copySelection();
    return false;
  }
  if (event.code === "KeyV") {
    void pasteClipboard();
    return false;
  }
  return true;
});

document.getElementById("btn-copy")?.addEventListener("click", () => void copySelection());
document.getElementById("btn-paste")?.addEventListener("click", () => void pasteClipboard());
// "End session" asks the broker to end it for everyone (the answer says who ended it);
// "Leave" only closes this terminal. Either way the page says so, never "Connection lost".
document.getElementById("btn-leave")?.addEventListener("click", () => {
  if (ended) return;
  const live = socket && socket.readyState === WebSocket.OPEN && app.dataset.state === "running";
  if (mode === "open" && live) {
    send(JSON.stringify({ type: "end" }));
    return;
  }
  ended = true;
  setState("ended", endText(mode === "open" ? "you" : "left", "", ""));
  if (socket) socket.close(1000, "left");
});

void connect();
