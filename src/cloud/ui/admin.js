/*
 * litefs-cloud admin view (docs/dashboard.md "The admin view"): served only
 * by the loopback admin listener. Clusters and their tokens; a new token is
 * shown once, in this page only.
 */
'use strict';

let csrf = null;


async function call(path, method, body) {
  const headers = {};
  if (method === 'POST' && csrf) headers['X-CSRF-Token'] = csrf;
  if (body) headers['Content-Type'] = 'application/x-www-form-urlencoded';
  const r = await fetch(path, { method: method || 'GET', headers, body, credentials: 'same-origin' });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) {
    if (r.status === 401 && path !== '/admin/login') show(false);
    throw new Error(j.error || 'HTTP ' + r.status);
  }
  return j;
}

function show(signedIn) {
  $('view-login').hidden = signedIn;
  $('view-admin').hidden = !signedIn;
  $('signout').hidden = !signedIn;
}

function fmt(ms) { return new Date(ms).toISOString().replace('T', ' ').slice(0, 19) + ' UTC'; }

async function load() {
  const r = await call('/admin/clusters');
  $('clusters').replaceChildren(...r.clusters.map((c) => el('tr', { 'data-cluster': c.name },
    el('th', { scope: 'row', text: c.name }),
    el('td', { cls: 'mono', text: c.cluster_id || '—' }),
    el('td', { text: fmt(c.created_ms) }),
    el('td', {}, ...c.tokens.map((t) => el('div', { 'data-token': t.id },
      el('code', { text: t.id }), ' ',
      el('button', { type: 'button', cls: 'quiet', text: 'Revoke', 'aria-label': 'Revoke token ' + t.id,
        onclick: () => revoke(t.id) })))),
    el('td', {}, el('button', { type: 'button', text: 'New token', 'aria-label': 'New token for ' + c.name,
      onclick: () => newToken('/admin/tokens?cluster=' + encodeURIComponent(c.name)) })))));
}

function showToken(r) {
  $('new-token').replaceChildren(el('div', { cls: 'box' },
    el('p', {}, el('strong', { text: 'New token for cluster ' + r.cluster + ' (ID ' + r.token_id + '). ' }),
      'It is shown only this once: copy it now.'),
    el('label', { for: 'token-text', text: 'Token' }),
    el('input', { id: 'token-text', type: 'text', readonly: 'readonly', value: r.token, spellcheck: 'false' })));
  $('token-text').select();
}

async function newToken(path) {
  $('adm-error').textContent = '';
  try {
    showToken(await call(path, 'POST'));
    await load();
  } catch (e) { $('adm-error').textContent = e.message; }
}

async function revoke(id) {
  $('adm-error').textContent = '';
  try {
    await call('/admin/tokens/revoke?id=' + encodeURIComponent(id), 'POST');
    $('new-token').replaceChildren(el('p', { cls: 'ok', text: 'Token ' + id + ' revoked: its sessions have ended.' }));
    await load();
  } catch (e) { $('adm-error').textContent = e.message; }
}

async function signIn(ev) {
  ev.preventDefault();
  $('login-error').textContent = '';
  try {
    const r = await call('/admin/login', 'POST', new URLSearchParams({ key: $('token').value.trim() }).toString());
    $('token').value = '';
    csrf = r.csrf;
    show(true);
    await load();
  } catch (e) { $('login-error').textContent = 'Sign-in refused: ' + e.message; }
}

document.addEventListener('DOMContentLoaded', async () => {
  $('login-form').addEventListener('submit', signIn);
  $('create-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    newToken('/admin/clusters?name=' + encodeURIComponent($('cluster-name').value.trim()));
    $('cluster-name').value = '';
  });
  $('signout').addEventListener('click', async () => {
    try { await call('/admin/logout', 'POST'); } catch (e) { /* signed out here either way */ }
    csrf = null;
    show(false);
  });
  const s = await call('/admin/session').catch(() => ({}));
  if (s.signed_in) {
    csrf = s.csrf;
    show(true);
    await load().catch((e) => { $('adm-error').textContent = e.message; });
  } else show(false);
});
