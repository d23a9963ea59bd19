"use strict";
// A small Markdown reader for model cards: headings, paragraphs, lists, tables, quotes, code.
// It builds DOM nodes with textContent only, so a card can never inject markup or script,
// and links are shown as text: the page never sends the reader to another host.

(function () {
  const INLINE = /(`[^`]+`|\*\*[^*]+\*\*|\[[^\]]+\]\([^)]*\))/;

  function inline(parent, text) {
    for (const part of text.split(INLINE)) {
      if (!part) continue;
      if (part.startsWith("`") && part.endsWith("`") && part.length > 1) {
        parent.appendChild(element("code", part.slice(1, -1)));
      } else if (part.startsWith("**") && part.endsWith("**") && part.length > 3) {
        parent.appendChild(element("strong", part.slice(2, -2)));
      } else if (part.startsWith("[")) {
        parent.appendChild(document.createTextNode(part.slice(1, part.indexOf("]"))));
      } else {
        parent.appendChild(document.createTextNode(part));
      }
    }
    return parent;
  }

  function element(tag, text) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function cells(line) {
    return line.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((cell) => cell.trim());
  }

  function table(lines) {
    const node = element("table");
    const header = cells(lines[0]);
    if (header.some((cell) => cell)) { // a header row of empty cells (a key-value table) is left out
      const head = element("thead");
      const headRow = element("tr");
      for (const cell of header) headRow.appendChild(inline(element("th"), cell));
      head.appendChild(headRow);
      node.appendChild(head);
    }
    const body = element("tbody");
    for (const line of lines.slice(2)) {
      const row = element("tr");
      for (const cell of cells(line)) row.appendChild(inline(element("td"), cell));
      body.appendChild(row);
    }
    node.appendChild(body);
    return node;
  }

  function list(lines, ordered) {
    const node = element(ordered ? "ol" : "ul");
    let item = null;
    for (const line of lines) {
      const start = line.match(ordered ? /^\s*\d+\.\s+(.*)$/ : /^\s*[-*]\s+(.*)$/);
      if (start) {
        item = inline(element("li"), start[1]);
        node.appendChild(item);
      } else if (item) {
        inline(item, " " + line.trim());
      }
    }
    return node;
  }

  const BLOCKS = [
    // [test on the first line, does a following line continue the block, build]
    [(l) => /^\s*\|/.test(l), (l) => /^\s*\|/.test(l), (ls) => table(ls)],
    [(l) => /^\s*[-*]\s+/.test(l), (l) => /^\s*([-*]\s+|\s{2,}\S)/.test(l), (ls) => list(ls, false)],
    [(l) => /^\s*\d+\.\s+/.test(l), (l) => /^\s*(\d+\.\s+|\s{2,}\S)/.test(l), (ls) => list(ls, true)],
    [(l) => /^>/.test(l), (l) => /^>/.test(l),
      (ls) => inline(element("blockquote"), ls.map((l) => l.replace(/^>\s?/, "")).join(" "))],
  ];

  function renderMarkdown(text) {
    const fragment = document.createDocumentFragment();
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) { i += 1; continue; }
      if (line.startsWith("```")) {
        const end = lines.indexOf("```", i + 1);
        const stop = end === -1 ? lines.length : end;
        const pre = element("pre");
        pre.appendChild(element("code", lines.slice(i + 1, stop).join("\n")));
        fragment.appendChild(pre);
        i = stop + 1;
        continue;
      }
      const heading = line.match(/^(#{1,6})\s+(.*)$/);
      if (heading) {
        // The dialog's own title is an h2: card headings start one level below it.
        const level = Math.min(heading[1].length + 2, 6);
        fragment.appendChild(inline(element(`h${level}`), heading[2]));
        i += 1;
        continue;
      }
      const block = BLOCKS.find(([starts]) => starts(line));
      const group = [line];
      i += 1;
      const continues = block ? block[1] : (l) => l.trim() && !/^(#|```|\s*\||\s*[-*]\s|\s*\d+\.\s|>)/.test(l);
      while (i < lines.length && lines[i].trim() && continues(lines[i])) {
        group.push(lines[i]);
        i += 1;
      }
      fragment.appendChild(block ? block[2](group) : inline(element("p"), group.join(" ")));
    }
    return fragment;
  }

  window.renderMarkdown = renderMarkdown;
})();
