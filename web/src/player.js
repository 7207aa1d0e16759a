// Transcript playback with asciinema-player: play, pause, seek, speed, and a jump to each
// command of the session. The recording is fetched same-origin with the console cookie.
import * as AsciinemaPlayer from "asciinema-player";

const holder = document.getElementById("player");
const commands = [...document.querySelectorAll("#commands .cmd")];
const markers = commands
  .map((button) => [Number(button.dataset.time), button.querySelector("code")?.textContent || ""])
  .filter(([time]) => Number.isFinite(time));

let speed = 1;
let player = null;

function create(startAt = 0, autoPlay = false) {
  if (player) player.dispose();
  holder.replaceChildren();
  player = AsciinemaPlayer.create(holder.dataset.cast, holder, {
    fit: "width",
    speed,
    startAt,
    autoPlay,
    preload: true,
    idleTimeLimit: 3,
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

create();

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
    const time = Number(button.dataset.time);
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
