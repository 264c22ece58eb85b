// Package helm's test renders the charts of deploy/helm with Helm's own engine (the Go library
// helm.sh/helm/v4, in a module of its own so that the Kubernetes modules stay out of Krypton's),
// decodes every object strictly into the Kubernetes API types, and checks the invariants: the
// region's size, ports, probes, PDB, NetworkPolicy, security context, certificate kinds, and the
// flags against `krypton server -h` of a freshly built binary.
package helm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// render renders the chart in dir with the given values over its defaults, as `helm template` does.
func render(t *testing.T, dir string, vals map[string]any) (map[string]string, error) {
	t.Helper()
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	opts := common.ReleaseOptions{Name: "kr", Namespace: "krypton", IsInstall: true}
	rv, err := util.ToRenderValues(ch, vals, opts, common.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, rv)
}

// objects splits the rendered manifests into documents and decodes each strictly into the type
// its kind names (an unknown field fails).
type objects struct {
	sts    []appsv1.StatefulSet
	deps   []appsv1.Deployment
	svc    []corev1.Service
	pdb    []policyv1.PodDisruptionBudget
	netpol []networkingv1.NetworkPolicy
	certs  []map[string]any
}

func decode(t *testing.T, out map[string]string) objects {
	t.Helper()
	var o objects
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !strings.HasSuffix(n, ".yaml") {
			continue
		}
		for _, doc := range strings.Split(out[n], "\n---") {
			if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) == "" {
				continue
			}
			var meta struct{ Kind string }
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s: %v\n%s", n, err, doc)
			}
			var target any
			switch meta.Kind {
			case "StatefulSet":
				o.sts = append(o.sts, appsv1.StatefulSet{})
				target = &o.sts[len(o.sts)-1]
			case "Deployment":
				o.deps = append(o.deps, appsv1.Deployment{})
				target = &o.deps[len(o.deps)-1]
			case "Service":
				o.svc = append(o.svc, corev1.Service{})
				target = &o.svc[len(o.svc)-1]
			case "PodDisruptionBudget":
				o.pdb = append(o.pdb, policyv1.PodDisruptionBudget{})
				target = &o.pdb[len(o.pdb)-1]
			case "NetworkPolicy":
				o.netpol = append(o.netpol, networkingv1.NetworkPolicy{})
				target = &o.netpol[len(o.netpol)-1]
			case "Certificate":
				o.certs = append(o.certs, map[string]any{})
				target = &o.certs[len(o.certs)-1]
			default:
				t.Fatalf("%s: unexpected kind %q", n, meta.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
				t.Fatalf("%s: %s: %v\n%s", n, meta.Kind, err, doc)
			}
		}
	}
	return o
}

// kryptonFlags builds cmd/krypton and returns the flags `krypton <command> -h` lists.
func kryptonFlags(t *testing.T, command ...string) map[string]bool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "krypton")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/krypton")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, _ := exec.Command(bin, append(command, "-h")...).CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 10 {
		t.Fatalf("krypton %s -h listed %d flags:\n%s", strings.Join(command, " "), len(flags), out)
	}
	return flags
}

// TestRegionChart and TestGovernanceChart render the two Raft charts for the default values and
// two variants (five nodes; other ports, no operator Certificate) and refuse 1 or 4 nodes.
func TestRegionChart(t *testing.T) {
	raftChart(t, "region", []string{"server"}, "spiffe://krypton/region/eu/node/${POD_NAME}")
}

func TestGovernanceChart(t *testing.T) {
	raftChart(t, "governance", []string{"governance", "server"}, "spiffe://krypton/governance/node/${POD_NAME}")
}

func raftChart(t *testing.T, chart string, command []string, wantURI string) {
	flags := kryptonFlags(t, command...)
	lintRes := lint.RunAll(chart, nil, "krypton", lint.WithSkipSchemaValidation(true))
	for _, m := range lintRes.Messages {
		if m.Severity > 1 { // above INFO
			t.Errorf("helm lint: %v", m)
		}
	}
	for _, tc := range []struct {
		name     string
		vals     map[string]any
		replicas int32
		maxUnav  int32
	}{
		{"default", nil, 3, 1},
		{"five", map[string]any{"replicas": 5}, 5, 2},
		{"ports", map[string]any{"ports": map[string]any{"api": 8400, "raft": 8410, "gossip": 8420, "http": 8480}, "certificates": map[string]any{"operator": ""}}, 3, 1},
	} {
		if chart == "region" && tc.name == "five" {
			tc.vals["governance"] = "kr-krypton-governance-0.kr-krypton-governance.krypton.svc:7500"
		}
		t.Run(tc.name, func(t *testing.T) {
			out, err := render(t, chart, tc.vals)
			if err != nil {
				t.Fatal(err)
			}
			o := decode(t, out)
			if len(o.sts) != 1 || len(o.svc) != 1 || len(o.pdb) != 1 || len(o.netpol) != 1 {
				t.Fatalf("want one StatefulSet, Service, PDB, NetworkPolicy; got %d %d %d %d", len(o.sts), len(o.svc), len(o.pdb), len(o.netpol))
			}
			s := o.sts[0]
			if *s.Spec.Replicas != tc.replicas {
				t.Errorf("replicas %d, want %d", *s.Spec.Replicas, tc.replicas)
			}
			if o.pdb[0].Spec.MaxUnavailable.IntValue() != int(tc.maxUnav) {
				t.Errorf("PDB maxUnavailable %v, want %d", o.pdb[0].Spec.MaxUnavailable, tc.maxUnav)
			}
			if o.svc[0].Spec.ClusterIP != "None" || s.Spec.ServiceName != o.svc[0].Name {
				t.Errorf("service %s clusterIP %q, StatefulSet serviceName %q: want a headless service it names", o.svc[0].Name, o.svc[0].Spec.ClusterIP, s.Spec.ServiceName)
			}
			if len(s.Spec.VolumeClaimTemplates) != 1 {
				t.Errorf("want a PVC template for -data-dir")
			}
			pod := s.Spec.Template.Spec
			if pod.Affinity == nil || pod.Affinity.PodAntiAffinity == nil || len(pod.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) == 0 {
				t.Errorf("no pod anti-affinity")
			}
			if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot || *pod.SecurityContext.RunAsUser == 0 {
				t.Errorf("pod security context %+v: want non-root", pod.SecurityContext)
			}
			c := pod.Containers[0]
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 1 || sc.Capabilities.Add[0] != "IPC_LOCK" {
				t.Errorf("container security context %+v: want a read-only root, no escalation, ALL dropped, IPC_LOCK only", sc)
			}
			if strings.Join(c.Args[:len(command)], " ") != strings.Join(command, " ") {
				t.Fatalf("args %q: want krypton %s", c.Args, strings.Join(command, " "))
			}
			args := map[string]string{}
			for _, a := range c.Args[len(command):] {
				name, val, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
				if !flags[name] {
					t.Errorf("arg %s: krypton server has no flag -%s", a, name)
				}
				args[name] = val
			}
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for flag, port := range map[string]string{"api-addr": "api", "raft-addr": "raft", "gossip-addr": "gossip-tcp", "http-addr": "http"} {
				if !strings.HasSuffix(args[flag], fmt.Sprintf(":%d", ports[port])) {
					t.Errorf("-%s=%s, but container port %s is %d", flag, args[flag], port, ports[port])
				}
			}
			if args["bootstrap-expect"] != fmt.Sprint(tc.replicas) || strings.Count(args["join"], ",") != int(tc.replicas)-1 {
				t.Errorf("-bootstrap-expect=%s -join=%s for %d replicas", args["bootstrap-expect"], args["join"], tc.replicas)
			}
			if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/livez" || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("probes %+v %+v: want /livez and /readyz", c.LivenessProbe, c.ReadinessProbe)
			}
			for _, e := range c.Env {
				if strings.Contains(e.Name, "KEY") && e.Value != "" {
					t.Errorf("env %s carries a secret in the pod spec: use a secretKeyRef", e.Name)
				}
			}
			// The NetworkPolicy opens exactly the container's ports.
			open := map[string]bool{}
			for _, r := range o.netpol[0].Spec.Ingress {
				for _, p := range r.Ports {
					open[fmt.Sprintf("%d/%s", p.Port.IntVal, *p.Protocol)] = true
				}
			}
			for _, p := range c.Ports {
				k := fmt.Sprintf("%d/%s", p.ContainerPort, p.Protocol)
				if !open[k] {
					t.Errorf("port %s %s not opened by the NetworkPolicy", p.Name, k)
				}
				delete(open, k)
			}
			if len(open) > 0 {
				t.Errorf("NetworkPolicy opens ports no container listens on: %v", open)
			}
			// Certificates: the node's from the CSI driver names the region-node kind; any
			// Certificate object is an operator's.
			var uri string
			for _, v := range pod.Volumes {
				if v.CSI != nil {
					uri = v.CSI.VolumeAttributes["csi.cert-manager.io/uri-sans"]
				}
			}
			if uri != wantURI {
				t.Errorf("node certificate URI %q: want the region-node kind named by the pod", uri)
			}
			for _, cert := range o.certs {
				spec := cert["spec"].(map[string]any)
				uris := spec["uris"].([]any)
				if len(uris) != 1 || !strings.HasPrefix(uris[0].(string), "spiffe://krypton/operator/") {
					t.Errorf("Certificate %v: want one operator URI", uris)
				}
			}
			var buf bytes.Buffer
			for _, v := range out {
				buf.WriteString(v)
			}
			if strings.Contains(buf.String(), "kind: ConfigMap") {
				t.Errorf("the chart renders a ConfigMap: keep settings in args and secrets in Secrets")
			}
		})
	}
	for _, n := range []int{1, 4} {
		if _, err := render(t, chart, map[string]any{"replicas": n}); err == nil || !strings.Contains(err.Error(), "replicas must be 3 or 5") {
			t.Errorf("replicas %d: %v, want the chart to refuse", n, err)
		}
	}
}

// checkArgs checks a container's krypton arguments against the command's flags and returns them.
func checkArgs(t *testing.T, c corev1.Container, command string, flags map[string]bool) map[string]string {
	t.Helper()
	if len(c.Args) == 0 || c.Args[0] != command {
		t.Fatalf("args %q: want krypton %s", c.Args, command)
	}
	args := map[string]string{}
	for _, a := range c.Args[1:] {
		name, val, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if !flags[name] {
			t.Errorf("arg %s: krypton %s has no flag -%s", a, command, name)
		}
		args[name] = val
	}
	return args
}

func checkHardened(t *testing.T, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("container %s security context %+v: want non-root, a read-only root, no escalation, ALL dropped", c.Name, sc)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/livez" || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("container %s probes: want /livez and /readyz", c.Name)
	}
}

// TestGatewayChart: as a Deployment the gateway gets a service certificate (client) and a gateway
// certificate (server) of its tenant as cert-manager Certificates, a Service and a NetworkPolicy
// for its gRPC port; as a sidecar the chart renders only the service Certificate and prints the
// container and volumes to add to the application's pod, serving on a Unix socket.
func TestGatewayChart(t *testing.T) {
	flags := kryptonFlags(t, "gateway")
	lintRes := lint.RunAll("gateway", nil, "krypton", lint.WithSkipSchemaValidation(true))
	for _, m := range lintRes.Messages {
		if m.Severity > 1 {
			t.Errorf("helm lint: %v", m)
		}
	}
	kinds := func(o objects) map[string]bool {
		k := map[string]bool{}
		for _, c := range o.certs {
			u := c["spec"].(map[string]any)["uris"].([]any)
			if len(u) != 1 {
				t.Errorf("Certificate with URIs %v: want exactly one", u)
				continue
			}
			us := u[0].(string)
			usages := fmt.Sprint(c["spec"].(map[string]any)["usages"])
			switch {
			case us == "spiffe://krypton/tenant/acme/service/payments" && strings.Contains(usages, "client auth") && !strings.Contains(usages, "server auth"):
				k["service"] = true
			case us == "spiffe://krypton/tenant/acme/gateway/gateway-1" && strings.Contains(usages, "server auth") && !strings.Contains(usages, "client auth"):
				k["gateway"] = true
			default:
				t.Errorf("Certificate %s with usages %s: not a kind the gateway uses", us, usages)
			}
		}
		return k
	}

	out, err := render(t, "gateway", nil)
	if err != nil {
		t.Fatal(err)
	}
	o := decode(t, out)
	if len(o.deps) != 1 || len(o.svc) != 1 || len(o.netpol) != 1 {
		t.Fatalf("deployment mode: %d Deployments, %d Services, %d NetworkPolicies, want one each", len(o.deps), len(o.svc), len(o.netpol))
	}
	if k := kinds(o); !k["service"] || !k["gateway"] {
		t.Errorf("deployment mode certificates %v: want a service and a gateway certificate", k)
	}
	c := o.deps[0].Spec.Template.Spec.Containers[0]
	checkHardened(t, c)
	args := checkArgs(t, c, "gateway", flags)
	if args["listen"] != fmt.Sprintf("0.0.0.0:%d", c.Ports[0].ContainerPort) || o.svc[0].Spec.Ports[0].Port != c.Ports[0].ContainerPort {
		t.Errorf("-listen=%s, container port %d, service port %d", args["listen"], c.Ports[0].ContainerPort, o.svc[0].Spec.Ports[0].Port)
	}
	if args["server-cert"] == "" || args["cert"] == "" || args["region-name"] == "" {
		t.Errorf("args %v: want -cert, -server-cert and -region-name", args)
	}

	out, err = render(t, "gateway", map[string]any{"mode": "sidecar"})
	if err != nil {
		t.Fatal(err)
	}
	notes := out["krypton-gateway/templates/NOTES.txt"]
	delete(out, "krypton-gateway/templates/NOTES.txt")
	o = decode(t, out)
	if len(o.deps) != 0 || len(o.svc) != 0 {
		t.Errorf("sidecar mode renders a workload")
	}
	if k := kinds(o); !k["service"] || k["gateway"] {
		t.Errorf("sidecar mode certificates %v: want only the service certificate", k)
	}
	i := strings.Index(notes, "containers:")
	if i < 0 {
		t.Fatalf("sidecar NOTES print no snippet:\n%s", notes)
	}
	var snippet struct {
		Containers []corev1.Container `json:"containers"`
		Volumes    []corev1.Volume    `json:"volumes"`
	}
	if err := yaml.UnmarshalStrict([]byte(notes[i:]), &snippet); err != nil {
		t.Fatalf("sidecar snippet: %v\n%s", err, notes[i:])
	}
	if len(snippet.Containers) != 1 || len(snippet.Volumes) != 3 {
		t.Fatalf("sidecar snippet: %d containers, %d volumes", len(snippet.Containers), len(snippet.Volumes))
	}
	checkHardened(t, snippet.Containers[0])
	args = checkArgs(t, snippet.Containers[0], "gateway", flags)
	if args["listen"] != "" || args["unix-socket"] == "" || args["server-cert"] != "" {
		t.Errorf("sidecar args %v: want the Unix socket only", args)
	}
	if _, err := render(t, "gateway", map[string]any{"mode": "daemonset"}); err == nil {
		t.Errorf("mode daemonset rendered; want a refusal")
	}
}
