// Risk page: DPD bucket bars and vintage curves from the #risk-data json_script block.
// Every number is also in the page's tables; without JS nothing is lost but the pictures.
(function () {
  "use strict";
  var source = document.getElementById("risk-data");
  if (!source || typeof Chart === "undefined") return;
  var data = JSON.parse(source.textContent);
  var palette = ["#0b6e4f", "#2b8a3e", "#5c940d", "#e67700", "#d9480f", "#c92a2a", "#862e9c",
    "#1864ab", "#0b7285", "#495057", "#a61e4d", "#5f3dc4"];
  var money = function (v) { return Number(v).toLocaleString(undefined, { maximumFractionDigits: 0 }); };
  var percent = function (v) { return (Number(v) * 100).toFixed(1) + "%"; };

  var buckets = document.getElementById("chart-buckets");
  if (buckets) {
    new Chart(buckets, {
      type: "bar",
      data: {
        labels: data.buckets.labels,
        datasets: [{ label: "Balance (USD)", data: data.buckets.balance, backgroundColor: ["#0b6e4f", "#5c940d", "#e67700", "#d9480f", "#c92a2a", "#862e9c", "#495057"] }]
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: function (c) { return money(c.parsed.y) + " USD · " + data.buckets.count[c.dataIndex] + " loans"; } } }
        },
        scales: { y: { beginAtZero: true, ticks: { callback: money } } }
      }
    });
  }

  function vintage(id, curves) {
    var canvas = document.getElementById(id);
    if (!canvas) return;
    var datasets = Object.keys(curves).map(function (cohort, i) {
      var color = palette[i % palette.length];
      return { label: cohort, data: curves[cohort], borderColor: color, backgroundColor: color, pointRadius: 2, tension: 0 };
    });
    new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: { xAxisKey: "x", yAxisKey: "y" },
        plugins: { tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + percent(c.parsed.y); } } } },
        scales: {
          x: { type: "linear", title: { display: true, text: "Months on book" }, ticks: { stepSize: 1 } },
          y: { beginAtZero: true, ticks: { callback: percent } }
        }
      }
    });
  }
  vintage("chart-vintage-written-off", data.vintages.written_off);
  vintage("chart-vintage-ever-30", data.vintages.ever_30);
})();
