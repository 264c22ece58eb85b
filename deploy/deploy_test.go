package deploy

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "prometheus/krypton-rules.yml"
	rulesTestFile = "prometheus/krypton-rules.test.yml"
	runbookFile   = "../docs/operations.md"
)

// promtool finds Prometheus's promtool (Debian package prometheus). Without it the test skips on
// a developer's machine and fails in CI (.ci/run sets KRYPTON_REQUIRE_PEERS=1 and installs it), so
// that the rules' check never silently stops running.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	msg := "promtool is not installed (Debian package prometheus: apt-get install --no-install-recommends prometheus)"
	if os.Getenv("KRYPTON_REQUIRE_PEERS") != "" || os.Getenv("CI") == "true" {
		t.Fatal(msg + " and KRYPTON_REQUIRE_PEERS or CI is set")
	}
	t.Skip(msg)
	return ""
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(promtool(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestPromtoolCheckRules: the rules file passes `promtool check rules` with every lint fatal, and
// its unit tests (krypton-rules.test.yml: synthetic series in, the alerts that must fire out).
func TestPromtoolCheckRules(t *testing.T) {
	runPromtool(t, "check", "rules", "--lint=all", "--lint-fatal", rulesFile)
	runPromtool(t, "test", "rules", rulesTestFile)
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// TestAlertsHaveRunbooks: every alert waits (for:), has a severity, a summary, and a description
// that names its runbook entry, a heading of docs/operations.md.
func TestAlertsHaveRunbooks(t *testing.T) {
	doc, err := os.ReadFile(runbookFile)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	alerts := 0
	for _, r := range readRules(t) {
		if r.Alert == "" {
			continue
		}
		alerts++
		if seen[r.Alert] {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if r.For == "" {
			t.Errorf("alert %s has no for: (a single bad scrape would page)", r.Alert)
		}
		switch r.Labels["severity"] {
		case "critical", "warning", "info":
		default:
			t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
		}
		if r.Annotations["summary"] == "" {
			t.Errorf("alert %s has no summary", r.Alert)
		}
		// GitHub's anchor of the heading "### KryptonX" is #kryptonx.
		link := "Runbook: docs/operations.md#" + strings.ToLower(r.Alert)
		if !strings.HasSuffix(r.Annotations["description"], link) {
			t.Errorf("alert %s: description does not end with %q", r.Alert, link)
		}
		if !regexp.MustCompile(`(?m)^### ` + r.Alert + `$`).Match(doc) {
			t.Errorf("alert %s: docs/operations.md has no heading \"### %s\" (its runbook entry)", r.Alert, r.Alert)
		}
	}
	if alerts == 0 {
		t.Fatalf("%s holds no alerts", rulesFile)
	}
	// Every runbook entry is an alert's: a renamed alert leaves no stale entry behind.
	for _, m := range regexp.MustCompile(`(?m)^### (Krypton\w+)$`).FindAllSubmatch(doc, -1) {
		if !seen[string(m[1])] {
			t.Errorf("docs/operations.md has a runbook entry for %s, which %s does not define", m[1], rulesFile)
		}
	}
}

// metricName matches what may be a metric name of Krypton's or of the runtime and process
// collectors in a query or an annotation. Recording rules' names (job:krypton_x:rate5m) hold one.
var metricName = regexp.MustCompile(`\b(?:krypton|go|process)_[a-z0-9_]*[a-z0-9]`)

// usedMetricNames are the metric names the rules and the dashboard use, each with where.
func usedMetricNames(t *testing.T) map[string]string {
	t.Helper()
	used := map[string]string{}
	add := func(where, s string) {
		for _, n := range metricName.FindAllString(s, -1) {
			if _, ok := used[n]; !ok {
				used[n] = where
			}
		}
	}
	for _, r := range readRules(t) {
		name := r.Alert + r.Record
		add(rulesFile+" "+name, r.Expr)
		for _, a := range r.Annotations {
			add(rulesFile+" "+name, a)
		}
	}
	for k, e := range dashboardExprs(t, readDashboard(t)) {
		add(dashboardFile+" "+k, e)
	}
	return used
}

// exported reports whether name is one of names, or a histogram's series of one (_bucket, _sum,
// _count).
func exported(names map[string]bool, name string) bool {
	if names[name] {
		return true
	}
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, s); ok && names[base] {
			return true
		}
	}
	return false
}
