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
  });
  player.addEventListener("error", () => {
    document.getElementById("player-error").hidden = false;
  });
  window.secondlinePlayer = player; // for the browser tests
}

create();

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
