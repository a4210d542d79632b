"""The web dashboard at ``/dashboard`` (issue 18): server-rendered pages (Jinja2 + htmx), a
terminal (xterm.js) and charts (Chart.js), served from this server with no CDN."""
