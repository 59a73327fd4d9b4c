/*
 * The two helpers the dashboard (app.js) and the admin view (admin.js)
 * share: building the DOM from values (never from HTML text).
 */
'use strict';

const $ = (id) => document.getElementById(id);

/* An element with attributes (text: its textContent, cls: its class,
 * onX: a listener) and children. */
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v;
    else if (k === 'cls') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}
