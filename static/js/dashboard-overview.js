// Overview page: draws the month-end trend charts from the #trend-data json_script block.
// The numbers are already on the page (tiles and the trend table); charts are an extra.
(function () {
  "use strict";
  var source = document.getElementById("trend-data");
  if (!source || typeof Chart === "undefined") return;
  var trend = JSON.parse(source.textContent);
  var green = "#0b6e4f", amber = "#b7791f", red = "#c53030";
  var money = function (v) { return Number(v).toLocaleString(undefined, { maximumFractionDigits: 0 }); };
  var percent = function (v) { return (Number(v) * 100).toFixed(1) + "%"; };

  function draw(id, type, datasets, format) {
    var canvas = document.getElementById(id);
    if (!canvas) return;
    new Chart(canvas, {
      type: type,
      data: { labels: trend.labels, datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        spanGaps: true,
        plugins: {
          legend: { display: datasets.length > 1 },
          tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + format(c.parsed.y); } } }
        },
        scales: { y: { beginAtZero: true, ticks: { callback: format } } }
      }
    });
  }

  function series(code, color) {
    return { label: trend.names[code], data: trend.series[code], borderColor: color, backgroundColor: color, pointRadius: 2 };
  }

  draw("chart-outstanding", "line", [series("outstanding_principal", green)], money);
  draw("chart-disbursements", "bar", [series("disbursements", green)], money);
  draw("chart-par", "line", [series("par_30", amber), series("par_90", red)], percent);
  draw("chart-collection", "line", [series("collection_rate", green)], percent);
})();
