// Risk page: DPD bucket bars and vintage curves from the #risk-data json_script block.
// Every number is also in the page's tables; without JS nothing is lost but the pictures.
(function () {
  "use strict";
  var source = document.getElementById("risk-data");
  if (!source || !window.abacoCharts) return;
  var data = JSON.parse(source.textContent);
  // Twelve cohorts side by side: neighbouring hues differ so adjacent months can be told apart.
  var palette = ["#0b6e4f", "#e67700", "#1864ab", "#c92a2a", "#5c940d", "#862e9c",
    "#0b7285", "#d9480f", "#495057", "#a61e4d", "#5f3dc4", "#b08900"];
  var money = window.abacoCharts.money, percent = window.abacoCharts.percent;

  var buckets = document.getElementById("chart-buckets");
  if (buckets) {
    new Chart(buckets, {
      type: "bar",
      data: {
        labels: data.buckets.labels,
        datasets: [{ label: "Balance (USD)", data: data.buckets.balance, backgroundColor: ["#0b6e4f", "#5c940d", "#e67700", "#d9480f", "#c92a2a", "#862e9c", "#495057"] }]
      },
      options: {
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
