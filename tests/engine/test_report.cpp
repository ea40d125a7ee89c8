// Report tables from a known set of result rows: exact md / csv / latex / json text, pivots,
// baseline deltas (expected numbers worked out by hand in the comments), filters, SVG plots.
#include <gtest/gtest.h>

#include "core/common/error.h"
#include "core/report/report.h"

using kvx::ResultRow;
using kvx::report::build_report;
using kvx::report::ReportOptions;

namespace {

ResultRow row(int64_t id, const std::string& method, nlohmann::json kbits, nlohmann::json vbits, double ppl,
              double kl) {
  ResultRow r;
  r.id = id;
  r.key = "k" + std::to_string(id);
  r.model = "m";
  r.dataset = "d";
  r.protocol = "perplexity";
  r.method = method;
  r.label = method == "fp16" ? "none" : "kvq";
  bool none = kbits.is_null();
  r.params = {{"key.type", none ? "none" : "kvq"}, {"value.type", none ? "none" : "kvq"}, {"protocol.seq_len", 512}};
  if (!none) {
    r.params["key.bits"] = kbits;
    r.params["value.bits"] = vbits;
  }
  r.metrics = {{"ppl", ppl}, {"kl", kl}};
  return r;
}

std::vector<ResultRow> rows() {
  // Inserted in scrambled order: the report sorts.
  return {row(1, "kvq", 4, 4, 10.2, 0.02), row(2, "kvq", 2, 2, 12.5, 0.2), row(3, "fp16", nullptr, nullptr, 10.0, 0.0),
          row(4, "kvq", 4, 2, 11.0, 0.1), row(5, "kvq", 2, 4, 11.5, 0.15)};
}

std::string report(ReportOptions o) { return build_report(rows(), o).text; }

}  // namespace

TEST(Report, LongTableWithBaselineMarkdown) {
  ReportOptions o;
  o.metrics = {"ppl"};
  o.baseline = "method=fp16";
  // Rows: method, then the varying fields it does not determine (key.bits, value.bits).
  // Δ vs fp16's 10.0: 12.5 -> +2.5 (+25%), 11.5 -> +1.5 (+15%), 11.0 -> +1 (+10%), 10.2 -> +0.2 (+2%).
  EXPECT_EQ(report(o),
            "| method | key.bits | value.bits |     ppl |   Δ ppl |  Δ% ppl |\n"
            "| ------ | -------- | ---------- | ------: | ------: | ------: |\n"
            "| fp16   | -        | -          | 10.0000 | +0.0000 |  +0.00% |\n"
            "| kvq    | 2        | 2          | 12.5000 | +2.5000 | +25.00% |\n"
            "| kvq    | 2        | 4          | 11.5000 | +1.5000 | +15.00% |\n"
            "| kvq    | 4        | 2          | 11.0000 | +1.0000 | +10.00% |\n"
            "| kvq    | 4        | 4          | 10.2000 | +0.2000 |  +2.00% |\n");
}

TEST(Report, LongTableAllMetricsCsv) {
  ReportOptions o;
  o.format = "csv";
  o.filters = {"key.bits>=4"};
  o.precision = 2;
  EXPECT_EQ(report(o),
            "method,value.bits,kl,ppl\n"
            "kvq,2,0.10,11.00\n"
            "kvq,4,0.02,10.20\n");
}

TEST(Report, PivotCsv) {
  ReportOptions o;
  o.format = "csv";
  o.filters = {"method=kvq"};
  o.rows = {"key.bits"};
  o.cols = "value.bits";
  o.metrics = {"ppl"};
  EXPECT_EQ(report(o),
            "key.bits,value.bits=2,value.bits=4\n"
            "2,12.5000,11.5000\n"
            "4,11.0000,10.2000\n");
}

TEST(Report, PivotWithDeltaCsv) {
  ReportOptions o;
  o.format = "csv";
  o.filters = {"method=kvq"};
  o.rows = {"key.bits"};
  o.cols = "value.bits";
  o.metrics = {"ppl"};
  o.baseline = "key.bits=4";
  // (2,2): 12.5 vs 11.0 -> +13.64%; (2,4): 11.5 vs 10.2 -> 1.3/10.2 = +12.75%.
  EXPECT_EQ(report(o),
            "key.bits,value.bits=2,Δ% value.bits=2,value.bits=4,Δ% value.bits=4\n"
            "2,12.5000,+13.64%,11.5000,+12.75%\n"
            "4,11.0000,+0.00%,10.2000,+0.00%\n");
}

TEST(Report, PivotMarkdownWithFp16Column) {
  ReportOptions o;
  o.rows = {"key.bits"};
  o.cols = "method";
  o.metrics = {"kl"};
  o.filters = {"value.bits!=2"};
  // fp16 has no value.bits (null passes !=), so its row is key.bits "-".
  EXPECT_EQ(report(o),
            "| key.bits | method=fp16 | method=kvq |\n"
            "| -------- | ----------: | ---------: |\n"
            "| -        |      0.0000 |          - |\n"
            "| 2        |           - |     0.1500 |\n"
            "| 4        |           - |     0.0200 |\n");
}

TEST(Report, LatexAndJson) {
  ReportOptions o;
  o.filters = {"method=fp16"};
  o.metrics = {"ppl"};
  o.rows = {"protocol.seq_len"};
  o.format = "latex";
  EXPECT_EQ(report(o),
            "\\begin{tabular}{lr}\n\\toprule\n"
            "protocol.seq\\_len & ppl \\\\\n\\midrule\n"
            "512 & 10.0000 \\\\\n\\bottomrule\n\\end{tabular}\n");
  o.format = "json";
  EXPECT_EQ(report(o), "[\n  {\n    \"protocol.seq_len\": 512,\n    \"ppl\": 10.0\n  }\n]\n");
}

TEST(Report, ErrorsNameTheField) {
  ReportOptions o;
  o.filters = {"bits=4"};
  try {
    report(o);
    FAIL();
  } catch (const kvx::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("--filter: unknown field 'bits' (known: model, dataset", 0), 0u) << e.what();
  }
  ReportOptions p;
  p.cols = "value.bits";
  EXPECT_THROW(report(p), kvx::Error);  // a pivot needs one metric
}

TEST(Report, InjectionInFilterIsJustAValue) {
  ReportOptions o;
  o.filters = {"method=kvq' OR '1'='1"};
  auto out = build_report(rows(), o);
  EXPECT_EQ(out.results, 0u);
}

TEST(Report, SvgPlot) {
  ReportOptions o;
  o.filters = {"method=kvq"};
  o.rows = {"key.bits"};
  o.cols = "value.bits";
  o.metrics = {"ppl"};
  o.plot = "x.svg";  // build_report only renders; run_report writes the file
  auto out = build_report(rows(), o);
  const std::string& svg = out.svg;
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  size_t lines = 0;
  for (size_t p = 0; (p = svg.find("<polyline", p)) != std::string::npos; ++p) ++lines;
  EXPECT_EQ(lines, 2u);  // one series per key.bits value
  EXPECT_NE(svg.find(">ppl vs value.bits</text>"), std::string::npos);
  EXPECT_EQ(svg, build_report(rows(), o).svg);  // deterministic
}

namespace {

ResultRow point(int64_t id, const std::string& method, double bpv, double ppl, double acc) {
  ResultRow r;
  r.id = id;
  r.key = "p" + std::to_string(id);
  r.protocol = "perplexity";
  r.method = method;
  r.label = method;
  r.params = {{"policy.setting", id}};
  r.metrics = {{"bpv", bpv}, {"ppl", ppl}, {"accuracy", acc}};
  return r;
}

std::vector<ResultRow> points() {
  // qaq: (2, 12) (3, 11) (3, 11.5) (4, 11.2) (5, 10.5); kvq: (2, 12.5) (4, 11).
  // Lower bpv and lower ppl are better: (3, 11.5) is dominated by (3, 11), (4, 11.2) by (3, 11).
  return {point(1, "qaq", 2, 12, 0.50), point(2, "qaq", 3, 11, 0.60), point(3, "qaq", 3, 11.5, 0.70),
          point(4, "qaq", 4, 11.2, 0.55), point(5, "qaq", 5, 10.5, 0.65), point(6, "kvq", 2, 12.5, 0.40),
          point(7, "kvq", 4, 11, 0.45)};
}

}  // namespace

TEST(Report, ParetoEnvelopePerMethod) {
  ReportOptions o;
  o.pareto = "bpv,ppl";
  o.format = "csv";
  o.precision = 1;
  EXPECT_EQ(build_report(points(), o).text,
            "method,policy.setting,bpv,ppl\n"
            "kvq,6,2.0,12.5\n"
            "kvq,7,4.0,11.0\n"
            "qaq,1,2.0,12.0\n"
            "qaq,2,3.0,11.0\n"
            "qaq,5,5.0,10.5\n");
  // Accuracy is maximized by default: qaq's front is (2, .50) (3, .70); kvq keeps both.
  o.pareto = "bpv,accuracy";
  o.precision = 2;
  EXPECT_EQ(build_report(points(), o).text,
            "method,policy.setting,bpv,accuracy\n"
            "kvq,6,2.00,0.40\n"
            "kvq,7,4.00,0.45\n"
            "qaq,1,2.00,0.50\n"
            "qaq,3,3.00,0.70\n");
  // An explicit direction wins: maximizing ppl keeps the worst points.
  o.pareto = "bpv:max,ppl:max";
  EXPECT_EQ(build_report(points(), o).results, 7u);
  EXPECT_NE(build_report(points(), o).text.find("qaq,5,5.00,10.50"), std::string::npos);
  o.pareto = "bpv,nope";
  EXPECT_THROW(build_report(points(), o), kvx::Error);
  o.pareto = "bpv:up,ppl";
  EXPECT_THROW(build_report(points(), o), kvx::Error);
}

TEST(Report, ParetoPlotShowsEveryPointAndTheEnvelope) {
  ReportOptions o;
  o.pareto = "bpv,ppl";
  o.plot = "x.svg";
  const std::string svg = build_report(points(), o).svg;
  size_t markers = 0, lines = 0;
  for (size_t p = svg.find("<circle"); p != std::string::npos; p = svg.find("<circle", p + 1)) ++markers;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) ++lines;
  // 7 points + 5 envelope points + one legend marker per series (4 series).
  EXPECT_EQ(markers, 7u + 5u + 4u);
  EXPECT_EQ(lines, 2u);  // one envelope per method
  EXPECT_NE(svg.find("qaq envelope"), std::string::npos);
}

namespace {

ResultRow passkey(int64_t id, const std::string& method, int depth, int length, double acc) {
  ResultRow r;
  r.id = id;
  r.key = "pk" + std::to_string(id);
  r.protocol = "passkey";
  r.method = method;
  r.label = method;
  r.params = {{"protocol.depth", depth}, {"protocol.length", length}};
  r.metrics = {{"accuracy", acc}};
  return r;
}

}  // namespace

TEST(Report, PasskeyHeatmapOnePanelPerMethod) {
  std::vector<ResultRow> rs = {passkey(1, "fp16", 0, 256, 1.0),  passkey(2, "fp16", 50, 256, 1.0),
                               passkey(3, "fp16", 0, 512, 1.0),  passkey(4, "fp16", 50, 512, 0.75),
                               passkey(5, "kvq2", 0, 256, 0.25), passkey(6, "kvq2", 50, 512, 0.0)};
  ReportOptions o;
  o.rows = {"protocol.depth"};
  o.cols = "protocol.length";
  o.metrics = {"accuracy"};
  o.plot = "h.svg";
  o.plot_kind = "heatmap";
  const std::string svg = build_report(rs, o).svg;
  size_t cells = 0;
  for (size_t p = svg.find("<rect x="); p != std::string::npos; p = svg.find("<rect x=", p + 1)) ++cells;
  EXPECT_EQ(cells, 8u);  // 2 panels x 2 depths x 2 lengths
  EXPECT_NE(svg.find("method=fp16"), std::string::npos);
  EXPECT_NE(svg.find("method=kvq2"), std::string::npos);
  EXPECT_NE(svg.find(">0.75<"), std::string::npos);
  EXPECT_NE(svg.find(">-<"), std::string::npos);  // kvq2 has no (50, 256) result
  // Lowest value (0) is the lightest colour, highest (1) the darkest.
  EXPECT_NE(svg.find("fill=\"rgb(247,251,255)\""), std::string::npos);
  EXPECT_NE(svg.find("fill=\"rgb(8,48,107)\""), std::string::npos);
  rs.push_back(passkey(7, "fp16", 0, 256, 0.5));  // a second result for one cell
  o.rows = {"protocol.depth", "method"};
  EXPECT_THROW(build_report(rs, o), kvx::Error);
}
