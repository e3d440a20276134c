// What every dashboard's charts share: Chart.js defaults, number formats and one way to draw a
// labelled series chart. Each page's own file (dashboard-<page>.js) only says what to draw.
(function () {
  "use strict";
  if (typeof Chart === "undefined") return;
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;

  var money = function (v) { return Number(v).toLocaleString(undefined, { maximumFractionDigits: 0 }); };
  var percent = function (v) { return (Number(v) * 100).toFixed(1) + "%"; };

  // A line or bar chart over `labels`, its y axis and tooltips in `format`; `stacked` stacks bars.
  function draw(id, type, labels, datasets, format, stacked) {
    var canvas = document.getElementById(id);
    if (!canvas) return;
    new Chart(canvas, {
      type: type,
      data: { labels: labels, datasets: datasets },
      options: {
        spanGaps: true,
        plugins: {
          legend: { display: datasets.length > 1 },
          tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + format(c.parsed.y); } } }
        },
        scales: {
          x: { stacked: !!stacked },
          // Whole units for money: an all-zero series would otherwise tick 0.2, 0.4 … shown as 0, 0, 1.
          y: { stacked: !!stacked, beginAtZero: true, ticks: { callback: format, precision: format === money ? 0 : undefined } }
        }
      }
    });
  }

  window.abacoCharts = { money: money, percent: percent, draw: draw };
})();
