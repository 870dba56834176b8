'use strict';
(() => {
  const form = document.getElementById('login-form');
  const input = document.getElementById('token');
  const button = document.getElementById('login');
  const error = document.getElementById('error');

  // Only a same-origin path ("/x", never "//host" or "/\host") is an acceptable target.
  function nextUrl() {
    const next = new URLSearchParams(location.search).get('next') || '';
    return /^\/(?![/\\])/.test(next) ? next : '/';
  }

  function detailText(body, status) {
    const d = body && body.detail;
    if (typeof d === 'string') return d;
    if (d && typeof d.message === 'string') return d.message;
    if (Array.isArray(d) && d.length) return d.map((e) => e.msg || String(e)).join('; ');
    return status === 401 ? 'Invalid token' : `Sign-in failed (HTTP ${status})`;
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    error.textContent = '';
    if (!token) { error.textContent = 'Enter your API token'; return; }
    button.disabled = true;
    try {
      const res = await fetch('/ui/login', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token }),
      });
      if (res.ok) { location.href = nextUrl(); return; }
      const body = await res.json().catch(() => null);
      error.textContent = detailText(body, res.status);
    } catch (e) {
      error.textContent = 'Cannot reach the server';
    }
    button.disabled = false;
  });
})();
