package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const dashboardFile = "grafana/krypton-dashboard.json"

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int     `json:"id"`
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"` // a collapsed row's
	GridPos *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	return d
}

// dashboardExprs are the PromQL queries of every panel, by "panel title/refId".
func dashboardExprs(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	ids := map[int]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if other, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("panel %q has no gridPos", p.Title)
			}
			walk(p.Panels)
			if p.Type == "row" || p.Type == "text" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource must be the dashboard's ${datasource} variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, q := range p.Targets {
				if strings.TrimSpace(q.Expr) == "" {
					t.Errorf("panel %q, query %s: empty expr", p.Title, q.RefID)
				}
				exprs[p.Title+"/"+q.RefID] = q.Expr
			}
		}
	}
	walk(d.Panels)
	return exprs
}

// grafanaVar is a dashboard variable in a query: $name, ${name}, ${name:format}, [[name]].
var grafanaVar = regexp.MustCompile(`\$\{[^}]+\}|\$\w+|\[\[\w+\]\]`)

// promQL turns a panel's query into one Prometheus parses: Grafana's interval variables become a
// duration, every other variable a name that fits wherever the dashboard uses one (inside a label
// matcher's quotes).
func promQL(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		switch strings.Trim(v, "${}[]") {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		}
		return "x"
	})
}

// TestDashboardLint: the dashboard is valid JSON with a uid, a datasource variable and unique panel
// ids, and every panel's query parses as PromQL (promtool check rules on a rules file made of them:
// Prometheus's own parser, which this module does not import).
func TestDashboardLint(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("%s: uid and title are required (Grafana keeps imports apart by uid)", dashboardFile)
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Errorf("%s: no datasource variable named datasource (the panels' ${datasource})", dashboardFile)
	}
	exprs := dashboardExprs(t, d)
	if len(exprs) == 0 {
		t.Fatalf("%s has no queries", dashboardFile)
	}
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, k := range keys {
		q, err := json.Marshal(promQL(exprs[k])) // a JSON string is a YAML string
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "      # %s\n      - record: dashboard:query_%d\n        expr: %s\n", k, i, q)
	}
	f := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool(t), "check", "rules", f).CombinedOutput(); err != nil {
		for i, k := range keys {
			t.Logf("dashboard:query_%d is %s", i, k)
		}
		t.Fatalf("a dashboard query does not parse as PromQL (promtool check rules %s): %v\n%s", f, err, out)
	}
}
