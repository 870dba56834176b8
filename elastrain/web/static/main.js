// main.js: starts the shell and draws the page that location.pathname names (the router).
'use strict';
(() => {
  const { $, el, link, pages, reportError, setNav, startShell } = window.Dash;

  const ROUTES = [
    [/^\/(?:jobs\/?)?$/, pages.jobs, 'jobs'],
    [/^\/jobs\/([^/]+)\/?$/, pages.job, 'jobs'],
    [/^\/cluster\/?$/, pages.cluster, 'cluster'],
    [/^\/models\/?$/, pages.models, 'models'],
    [/^\/studies\/?$/, pages.studies, 'studies'],
    [/^\/studies\/([^/]+)\/?$/, pages.study, 'studies'],
    [/^\/simulations\/?$/, pages.simulations, 'simulations'],
  ];

  async function main() {
    startShell();
    const app = $('#app');
    for (const [pattern, page, section] of ROUTES) {
      const match = location.pathname.match(pattern);
      if (!match) continue;
      setNav(section);
      const args = match.slice(1).map(decodeURIComponent);
      try {
        await page(app, ...args);
      } catch (e) {
        reportError(e);
      }
      return;
    }
    app.append(el('div', { class: 'page-head' }, el('h1', {}, 'Not found')),
      el('p', {}, 'No page here. ', link('/', 'Back to the jobs.')));
  }

  main();
})();
