/* TokenSite dashboards: progressive enhancement only. Every number and table is in the HTML;
   this script shows times in the viewer's zone, draws charts from the JSON embedded with
   json_script, and refreshes the live rolling rates from live.json. */
(function () {
  "use strict";

  var COLORS = { input: "#2f6fdf", output: "#16a34a", cost: "#9333ea", throttle: "#c2410c", live: "#0891b2" };

  function localizeTimes(root) {
    var formatter = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
      timeZoneName: "short"
    });
    (root || document).querySelectorAll("time.local-time[datetime]").forEach(function (node) {
      var moment = new Date(node.getAttribute("datetime"));
      if (isNaN(moment.getTime())) { return; }
      node.title = node.getAttribute("datetime");
      node.textContent = formatter.format(moment);
    });
  }

  function readJson(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  function timeLabels(isoLabels, binSeconds) {
    var options = binSeconds >= 86400 ? { month: "short", day: "numeric" }
      : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
    var formatter = new Intl.DateTimeFormat(undefined, options);
    return isoLabels.map(function (iso) { return formatter.format(new Date(iso)); });
  }

  var number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

  function baseOptions(extra) {
    var options = {
      responsive: true, maintainAspectRatio: false, animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom" } },
      scales: { x: { ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 10 } }, y: { beginAtZero: true } }
    };
    return Object.assign(options, extra || {});
  }

  var builders = {
    tokens: function (data) {
      var options = baseOptions();
      options.scales.x.stacked = true; options.scales.y.stacked = true;
      options.scales.y.title = { display: true, text: "tokens" };
      return { type: "bar", options: options, data: {
        labels: timeLabels(data.labels, data.bin_seconds),
        datasets: [
          { label: "Input tokens", data: data.input_tokens, backgroundColor: COLORS.input },
          { label: "Output tokens", data: data.output_tokens, backgroundColor: COLORS.output }
        ] } };
    },
    cost: function (data) {
      var options = baseOptions();
      options.scales.y.title = { display: true, text: "USD (priced tokens)" };
      options.plugins.tooltip = { callbacks: { label: function (item) {
        return "$" + Number(item.raw).toFixed(item.raw < 1 ? 4 : 2);
      } } };
      return { type: "bar", options: options, data: {
        labels: timeLabels(data.labels, data.bin_seconds),
        datasets: [{ label: "Estimated cost (USD)", data: data.cost_usd, backgroundColor: COLORS.cost }] } };
    },
    throttle: function (data) {
      var options = baseOptions();
      options.scales.y.title = { display: true, text: "seconds waited" };
      options.scales.count = { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                               title: { display: true, text: "throttles" } };
      return { type: "bar", options: options, data: {
        labels: timeLabels(data.labels, data.bin_seconds),
        datasets: [
          { label: "Throttle wait (s)", data: data.throttle_wait_s, backgroundColor: COLORS.throttle },
          { label: "Throttles", data: data.throttle_count, type: "line", yAxisID: "count", borderColor: "#7c2d12",
            pointRadius: 0, borderWidth: 1.5 }
        ] } };
    },
    live: function (data) {
      var options = baseOptions();
      options.scales.y.title = { display: true, text: "tokens / s" };
      return { type: "line", options: options, data: {
        labels: timeLabels(data.per_minute.labels, 60),
        datasets: [{ label: "Tokens per second, by minute", data: data.per_minute.tokens_per_second,
                     borderColor: COLORS.live, backgroundColor: "rgba(8,145,178,.15)", fill: true, pointRadius: 0 }] } };
    },
    steps: function (document_) {
      var steps = document_.token_usage.breakdown_by_step;
      var options = baseOptions();
      options.scales.x.stacked = true; options.scales.y.stacked = true;
      options.scales.y.title = { display: true, text: "tokens" };
      options.scales.cost = { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                              title: { display: true, text: "USD" } };
      options.scales.x.ticks = { autoSkip: false, maxRotation: 30 };
      return { type: "bar", options: options, data: {
        labels: steps.map(function (s) { return s.step; }),
        datasets: [
          { label: "Input tokens", data: steps.map(function (s) { return s.input; }), backgroundColor: COLORS.input, stack: "t" },
          { label: "Output tokens", data: steps.map(function (s) { return s.output; }), backgroundColor: COLORS.output, stack: "t" },
          { label: "Cost (USD)", data: steps.map(function (s) { return s.cost_usd; }), type: "line", yAxisID: "cost",
            borderColor: COLORS.cost, backgroundColor: COLORS.cost }
        ] } };
    },
    timeline: function (timeline, canvas) {
      var lanes = [];
      for (var lane = 1; lane <= Math.max(1, timeline.lanes); lane++) { lanes.push(String(lane)); }
      canvas.parentNode.style.height = Math.min(900, Math.max(180, timeline.lanes * 16 + 80)) + "px";
      var span = 0;
      timeline.bars.forEach(function (bar) { span = Math.max(span, bar.end_ms); });
      var minWidth = Math.max(1, span / 2000);  // a zero-length call still shows as a sliver
      function points(type) {
        return timeline.bars.filter(function (bar) { return bar.type === type; }).map(function (bar) {
          return { x: [bar.start_ms / 1000, Math.max(bar.end_ms, bar.start_ms + minWidth) / 1000], y: String(bar.lane + 1), bar: bar };
        });
      }
      var options = baseOptions({ indexAxis: "y" });
      options.interaction = { mode: "nearest", intersect: true };
      options.scales = {
        x: { type: "linear", beginAtZero: true, title: { display: true, text: "seconds from the first event" } },
        y: { type: "category", labels: lanes, title: { display: true, text: "lane" },
             ticks: { autoSkip: true, maxTicksLimit: 20 } }
      };
      options.plugins.tooltip = { callbacks: { label: function (item) {
        var bar = item.raw.bar;
        var head = bar.type === "throttle" ? "throttled (attempt " + bar.attempt + ", " + bar.status_code + ")"
          : number.format(bar.input_tokens) + " in / " + number.format(bar.output_tokens) + " out";
        return bar.step + " · " + bar.model + " · " + head + " · " + number.format(bar.end_ms - bar.start_ms) + " ms";
      } } };
      return { type: "bar", options: options, data: { labels: lanes, datasets: [
        { label: "Call", data: points("usage"), backgroundColor: "rgba(47,111,223,.75)", borderColor: "#fff", borderWidth: 1, grouped: false, barPercentage: 0.9, categoryPercentage: 1 },
        { label: "Throttle wait", data: points("throttle"), backgroundColor: "rgba(194,65,12,.85)", grouped: false, barPercentage: 0.9, categoryPercentage: 1 }
      ] } };
    }
  };

  function drawCharts() {
    if (typeof window.Chart === "undefined") { return; }
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var build = builders[canvas.dataset.chart];
      var data = readJson(canvas.dataset.source);
      if (!build || !data) { return; }
      new window.Chart(canvas, build(data, canvas));
    });
  }

  function refreshLive() {
    var canvas = document.querySelector("canvas[data-live-url]");
    if (!canvas || !window.fetch) { return; }
    var url = canvas.dataset.liveUrl;
    window.setInterval(function () {
      if (document.hidden) { return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (live) {
          if (!live) { return; }
          Object.keys(live.rates).forEach(function (window_) {
            var node = document.querySelector("[data-live-rate='" + window_ + "']");
            if (node) { node.textContent = number.format(live.rates[window_]); }
          });
          var chart = window.Chart && window.Chart.getChart(canvas);
          if (chart) {
            chart.data.labels = timeLabels(live.per_minute.labels, 60);
            chart.data.datasets[0].data = live.per_minute.tokens_per_second;
            chart.update("none");
          }
        })
        .catch(function () { /* keep the last figures; the next tick retries */ });
    }, Number(canvas.dataset.liveEvery || 15000));
  }

  document.addEventListener("DOMContentLoaded", function () {
    localizeTimes(document);
    drawCharts();
    refreshLive();
  });
})();
