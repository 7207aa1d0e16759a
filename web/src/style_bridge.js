// xterm.js writes its computed CSS (cell sizes, theme colours) into <style> elements it
// creates at run time. The console's CSP (style-src 'self') rightly refuses inline styles, so
// those would not apply. Instead of weakening the CSP, the terminal page hands xterm.js an
// inert <sl-style> element for each <style> it asks for, and applies the CSS it writes there
// through a constructable stylesheet (document.adoptedStyleSheets): CSS that only our own
// bundled script can produce, never markup that an injection could plant.

class BridgedStyle extends HTMLElement {
  #sheet = new CSSStyleSheet();
  #css = "";

  connectedCallback() {
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, this.#sheet];
  }

  disconnectedCallback() {
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== this.#sheet);
  }

  get textContent() {
    return this.#css;
  }

  set textContent(css) {
    this.#css = String(css ?? "");
    this.#sheet.replaceSync(this.#css);
  }
}

export function bridgeStyleElements() {
  if (!customElements.get("sl-style")) customElements.define("sl-style", BridgedStyle);
  const create = Document.prototype.createElement;
  document.createElement = function createElement(tag, options) {
    if (String(tag).toLowerCase() === "style") return create.call(this, "sl-style");
    return create.call(this, tag, options);
  };
}
