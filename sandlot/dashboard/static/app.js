// Sandlot dashboard behaviour: CSRF on htmx requests, confirmations, charts, the terminal.
// Loaded as a file (the page's CSP allows only scripts from this server, no inline code).
(function () {
  "use strict";
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  document.addEventListener("htmx:configRequest", (e) => { e.detail.headers["X-CSRF-Token"] = csrf(); });

  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) e.preventDefault();
  });

  function lineChart(canvas, label, color) {
    return new window.Chart(canvas, {
      type: "line",
      data: { labels: [], datasets: [{ label, data: [], borderColor: color, backgroundColor: color + "33", fill: true,
                                         pointRadius: 0, tension: 0.2 }] },
      options: { animation: false, maintainAspectRatio: false, scales: { y: { beginAtZero: true } },
                 plugins: { legend: { display: true } } },
    });
  }
  const clock = (unix) => new Date(unix * 1000).toLocaleTimeString();

  function metricsCharts(box) {
    if (!window.Chart) return;
    const cpu = lineChart(document.getElementById("chart-cpu"), "CPU %", "#2f6fed");
    const mem = lineChart(document.getElementById("chart-mem"), "Memory MiB", "#1e8e3e");
    async function refresh() {
      const r = await fetch(box.dataset.metrics, { credentials: "same-origin" });
      if (!r.ok) return;
      const points = await r.json();
      const labels = points.map((p) => clock(p.timestampUnix));
      cpu.data.labels = labels; cpu.data.datasets[0].data = points.map((p) => p.cpuUsedPct); cpu.update();
      mem.data.labels = labels; mem.data.datasets[0].data = points.map((p) => p.memUsed / 1048576); mem.update();
      box.dataset.points = String(points.length);
    }
    refresh(); setInterval(refresh, 5000);
  }

  function usageChart(box) {
    if (!window.Chart) return;
    const chart = lineChart(document.getElementById("chart-usage"), "Concurrent sandboxes (last 24 h)", "#2f6fed");
    fetch(box.dataset.usage, { credentials: "same-origin" }).then((r) => r.json()).then((points) => {
      chart.data.labels = points.map((p) => clock(p.timestampUnix));
      chart.data.datasets[0].data = points.map((p) => p.concurrentSandboxes);
      chart.update();
      box.dataset.points = String(points.length);
    });
  }

  function openTerminal(button) {
    const box = document.getElementById("terminal");
    box.classList.add("open");
    button.disabled = true;
    const term = new window.Terminal({ cursorBlink: true, convertEol: false, fontSize: 13 });
    const fit = new window.FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(box);
    fit.fit();
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + button.dataset.ws);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify({ csrf: csrf(), cols: term.cols, rows: term.rows }));
    ws.onmessage = (m) => { term.write(typeof m.data === "string" ? m.data : new Uint8Array(m.data)); };
    ws.onclose = () => { term.write("\r\n[disconnected]\r\n"); button.disabled = false; };
    term.onData((data) => { if (ws.readyState === 1) ws.send(JSON.stringify({ type: "input", data })); });
    term.onResize(({ cols, rows }) => { if (ws.readyState === 1) ws.send(JSON.stringify({ type: "resize", cols, rows })); });
    window.addEventListener("resize", () => fit.fit());
    window.sandlotTerminal = term;   // tests read the screen through it
    term.focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const metrics = document.querySelector("[data-metrics]");
    if (metrics) metricsCharts(metrics);
    const usage = document.querySelector("[data-usage]");
    if (usage) usageChart(usage);
    const button = document.getElementById("open-terminal");
    if (button) button.addEventListener("click", () => openTerminal(button));
  });
})();
