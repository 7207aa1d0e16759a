// Text that came from an agent or a user (participant names, terminal titles), made safe to
// show with textContent: no control characters, no bidi overrides, capped.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

export function safeText(value, max = 120) {
  return String(value ?? "").replace(UNSAFE, "").trim().slice(0, max);
}
