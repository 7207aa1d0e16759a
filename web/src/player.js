// Transcript playback with asciinema-player: play, pause, seek, speed, and a jump to each
// command of the session. The recording is fetched same-origin with the console cookie.
import * as AsciinemaPlayer from "asciinema-player";

// A pause longer than this many seconds plays as this long.
const IDLE_LIMIT = 3;

const holder = document.getElementById("player");
const commands = [...document.querySelectorAll("#commands .cmd")];

// The player shortens every long pause on its timeline, but it places the markers it is
// given, and seeks, at the times it is told: a command after a long pause (a consent wait,
// a coffee) would be marked and jumped to too late. So each command's time is carried onto
// the shortened timeline the way the player shortens it: from the event before it, at most
// IDLE_LIMIT later (asciicast v2: each event line starts with its absolute time).
function onShortenedTimeline(cast, time) {
  let previous = 0;
  let shortened = 0;
  for (const line of cast.split("\n").slice(1)) {
    const at = Number.parseFloat(line.slice(1, line.indexOf(",")));
    if (!Number.isFinite(at)) continue;
    if (at > time) break;
    shortened += Math.min(at - previous, IDLE_LIMIT);
    previous = at;
  }
  return shortened + Math.min(time - previous, IDLE_LIMIT);
}

async function loadCast() {
  const response = await fetch(holder.dataset.cast, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`transcript: ${response.status}`);
  return response.text();
}

let cast = "";
try {
  cast = await loadCast();
} catch {
  document.getElementById("player-error").hidden = false;
}
const markers = [];
for (const button of commands) {
  const time = Number(button.dataset.time);
  if (!Number.isFinite(time)) continue;
  button.dataset.playTime = String(onShortenedTimeline(cast, time));
  markers.push([Number(button.dataset.playTime), button.querySelector("code")?.textContent || ""]);
}

let speed = 1;
let player = null;

function create(startAt = 0, autoPlay = false) {
  if (player) player.dispose();
  holder.replaceChildren();
  player = AsciinemaPlayer.create({ data: cast }, holder, {
    fit: "width",
    speed,
    startAt,
    autoPlay,
    preload: true,
    idleTimeLimit: IDLE_LIMIT,
    markers,
    terminalFontFamily: '"DejaVu Sans Mono", Menlo, Consolas, monospace',
    theme: "asciinema",
    // The seek bar stays in view while playing ("auto" hides it when the mouse rests).
    controls: true,
  });
  player.addEventListener("error", () => {
    document.getElementById("player-error").hidden = false;
  });
  window.secondlinePlayer = player; // for the browser tests
}

if (cast) create();

// A wide recording (a 160-column terminal, say) gets the page's whole width, commands below,
// so that fitted to the width its font stays readable. The player shows a default size until
// the recording is loaded (and again after a speed change), so follow its size as it is set.
const grid = document.querySelector(".playback-grid");
function widenWhenWide() {
  const term = holder.querySelector(".ap-term");
  const cols = term ? Number(term.style.getPropertyValue("--term-cols")) : 0;
  if (cols > 0 && grid.dataset.cols !== String(cols)) {
    grid.classList.toggle("playback-wide", cols > 110);
    grid.dataset.cols = String(cols);
  }
}
new MutationObserver(widenWhenWide).observe(holder, {
  subtree: true,
  childList: true,
  attributes: true,
  attributeFilter: ["style"],
});
widenWhenWide();

for (const button of commands) {
  button.addEventListener("click", async () => {
    const time = Number(button.dataset.playTime);
    if (!Number.isFinite(time)) return;
    await player.seek(time);
    await player.play();
    for (const other of commands) other.removeAttribute("aria-current");
    button.setAttribute("aria-current", "true");
  });
}

for (const button of document.querySelectorAll("[data-speed]")) {
  button.addEventListener("click", async () => {
    const now = (await player.getCurrentTime()) || 0;
    speed = Number(button.dataset.speed) || 1;
    for (const other of document.querySelectorAll("[data-speed]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    // The player takes its speed when it is made: make it anew where it was.
    create(now, true);
  });
}
