package config_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"

	"github.com/relayfw/relayfw/config"
)

// The Ansible role that writes relayfw.toml (ansible/relayfw/roles/relayfw).
const (
	roleDefaults = "../ansible/relayfw/roles/relayfw/defaults/main.yml"
	roleTemplate = "../ansible/relayfw/roles/relayfw/templates/relayfw.toml.j2"
)

// configKeys are the keys config.Config reads, as dotted paths; the keys
// of an array of tables ([[instance]]) are below its own path.
func configKeys() (keys []string, arrays map[string]bool) {
	arrays = map[string]bool{}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "" || name == "-" {
				continue
			}
			key := prefix + name
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case ft.Kind() == reflect.Struct:
				walk(key+".", ft)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				arrays[key] = true
				walk(key+".", ft.Elem())
			default:
				keys = append(keys, key)
			}
		}
	}
	walk("", reflect.TypeOf(config.Config{}))
	sort.Strings(keys)
	return keys, arrays
}

// roleVariable is the role's variable for a key: relayfw_ and the key's
// path with _ for . (an array of tables is one list variable).
func roleVariable(key string) string { return "relayfw_" + strings.ReplaceAll(key, ".", "_") }

// samples are values other than relayfw's defaults, one for every key
// config.Config reads: a key added to relayfw.toml without a sample here
// fails TestRoleWritesEveryKey, so the role cannot fall behind.
var samples = map[string]any{
	"torrc":                   "/etc/tor/torrc-exit",
	"backend":                 "iptables",
	"strict_modes":            false,
	"data_directory":          "/srv/tor",
	"tor.verify":              false,
	"tor.path":                "/opt/tor/bin/tor",
	"tor.verify_timeout":      "2m",
	"allow.dns":               false,
	"allow.dhcp":              false,
	"allow.ntp":               false,
	"allow.ping":              false,
	"allow.ndp":               false,
	"allow.resolvers":         []any{"192.0.2.53", "2001:db8::53"},
	"allow.resolver_user":     "unbound",
	"allow.updates":           false,
	"log.rejects_per_minute":  30,
	"inbound.enabled":         true,
	"inbound.dir_ports":       true,
	"inbound.per_minute":      20,
	"inbound.burst":           10,
	"inbound.per_hour":        100,
	"inbound.block":           "30m",
	"inbound.max_connections": 4,
	"inbound.ipv4_prefix":     24,
	"inbound.ipv6_prefix":     56,
	"inbound.set_size":        65536,
	"inbound.trusted":         []any{"192.0.2.7", "2001:db8::/48"},
	"inbound.trust_relays":    true,
	"instance.name":           "exit1",
	"instance.torrc":          "/etc/tor/instances/exit1/torrc",
	"instance.defaults_torrc": "/run/tor-instances/exit1.defaults",
	"allow.extra.name":        "smarthost",
	"allow.extra.proto":       "udp",
	"allow.extra.to":          []any{"mail.example.org", "198.51.100.0/24"},
	"allow.extra.ports":       []any{"587", "8000-8999"},
	"allow.extra.user":        "root",
}

// renderRole renders the role's relayfw.toml template once for each set
// of variables, each overlaid on the role's defaults, with Jinja2 as Ansible's template module
// does (trim_blocks; to_json, bool and Ansible's other filters the
// template uses, as Ansible defines them).
func renderRole(t *testing.T, varSets ...map[string]any) [][]byte {
	t.Helper()
	python, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(python, "-c", "import jinja2").Run()
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("python3 with jinja2 (Debian's python3-jinja2, which ansible-core brings): %v", err)
		}
		t.Skipf("SKIPPED: needs python3 with jinja2 (bash scripts/setup installs ansible-core, which brings it): %v", err)
	}
	data, err := os.ReadFile(roleDefaults)
	if err != nil {
		t.Fatal(err)
	}
	var sets []map[string]any
	for _, vars := range varSets {
		all := map[string]any{}
		if err := yaml.Unmarshal(data, &all); err != nil {
			t.Fatalf("%s: %v", roleDefaults, err)
		}
		for k, v := range vars {
			all[k] = v
		}
		sets = append(sets, all)
	}
	varsJSON, err := json.Marshal(sets)
	if err != nil {
		t.Fatal(err)
	}
	varsFile := filepath.Join(t.TempDir(), "vars.json")
	if err := os.WriteFile(varsFile, varsJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	const render = `
import json, sys, jinja2
def to_bool(v):
    if isinstance(v, str):
        return v.lower() in ("yes", "on", "1", "true", "y", "t")
    return bool(v)
env = jinja2.Environment(loader=jinja2.FileSystemLoader("."), undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
env.filters["to_json"] = json.dumps
env.filters["bool"] = to_bool
with open(sys.argv[2]) as f:
    sets = json.load(f)
template = env.get_template(sys.argv[1])
sys.stdout.write("\0".join(template.render(**variables) for variables in sets))
`
	cmd := exec.Command(python, "-c", render, filepath.Base(roleTemplate), varsFile)
	cmd.Dir = filepath.Dir(roleTemplate)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("rendering %s: %v\n%s", roleTemplate, err, stderr)
	}
	return bytes.Split(out, []byte{0})
}

// leafKeys are the dotted paths of a decoded TOML document's values.
func leafKeys(prefix string, v any, out map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			leafKeys(prefix+k+".", child, out)
		}
	case []any:
		if len(v) > 0 {
			if _, table := v[0].(map[string]any); table {
				for _, child := range v {
					leafKeys(prefix, child, out)
				}
				return
			}
		}
		out[strings.TrimSuffix(prefix, ".")] = true
	default:
		out[strings.TrimSuffix(prefix, ".")] = true
	}
}

// TestRoleWritesEveryKey: the role has a variable for every key
// config.Config reads, its template writes each of them, and what it
// writes is what relayfw reads.
func TestRoleWritesEveryKey(t *testing.T) {
	keys, arrays := configKeys()
	data, err := os.ReadFile(roleDefaults)
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]any{}
	if err := yaml.Unmarshal(data, &defaults); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, ok := samples[k]; !ok {
			t.Errorf("key %s: no sample value in this test: add one (and the role's variable %s)", k, roleVariable(k))
		}
		parent := k[:max(strings.LastIndex(k, "."), 0)]
		if arrays[parent] {
			continue
		}
		if _, ok := defaults[roleVariable(k)]; !ok {
			t.Errorf("key %s: the role's defaults lack %s", k, roleVariable(k))
		}
	}
	for a := range arrays {
		if v, ok := defaults[roleVariable(a)]; !ok || v == nil || reflect.TypeOf(v).Kind() != reflect.Slice {
			t.Errorf("[[%s]]: the role's defaults lack the list %s", a, roleVariable(a))
		}
	}

	// Two renderings with every key set (torrc and [[instance]] exclude
	// each other): together they write every key, each with the value
	// relayfw then reads.
	type rendering struct {
		vars          map[string]any
		want          map[string]any
		expect        []string
		withInstances bool
	}
	var renderings []rendering
	for _, withInstances := range []bool{false, true} {
		vars := map[string]any{}
		want := map[string]any{}
		set := func(doc map[string]any, path []string, v any) {
			for _, p := range path[:len(path)-1] {
				next, ok := doc[p].(map[string]any)
				if !ok {
					next = map[string]any{}
					doc[p] = next
				}
				doc = next
			}
			doc[path[len(path)-1]] = v
		}
		rows := map[string]map[string]any{}
		var expect []string
		for _, k := range keys {
			parent := k[:max(strings.LastIndex(k, "."), 0)]
			switch {
			case arrays[parent]:
				if parent == "instance" && !withInstances {
					continue
				}
				if rows[parent] == nil {
					rows[parent] = map[string]any{}
				}
				rows[parent][k[len(parent)+1:]] = samples[k]
				expect = append(expect, k)
			case k == "torrc" && withInstances:
			default:
				expect = append(expect, k)
				vars[roleVariable(k)] = samples[k]
				set(want, strings.Split(k, "."), samples[k])
			}
		}
		for a, row := range rows {
			vars[roleVariable(a)] = []any{row}
			set(want, strings.Split(a, "."), []any{row})
		}
		renderings = append(renderings, rendering{vars, want, expect, withInstances})
	}
	var varSets []map[string]any
	for _, r := range renderings {
		varSets = append(varSets, r.vars)
	}
	covered := map[string]bool{}
	for i, rendered := range renderRole(t, varSets...) {
		want, expect, withInstances := renderings[i].want, renderings[i].expect, renderings[i].withInstances
		got, err := config.Parse("relayfw.toml", rendered)
		if err != nil {
			t.Fatalf("relayfw refuses what the role writes: %v\n%s", err, rendered)
		}
		wantTOML, err := toml.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		wantConfig, err := config.Parse("want.toml", wantTOML)
		if err != nil {
			t.Fatalf("the samples: %v\n%s", err, wantTOML)
		}
		if diff := cmp.Diff(wantConfig, got); diff != "" {
			t.Errorf("the role wrote other values than its variables' (-variables +written):\n%s\n%s", diff, rendered)
		}
		written := map[string]bool{}
		var doc map[string]any
		if err := toml.Unmarshal(rendered, &doc); err != nil {
			t.Fatal(err)
		}
		leafKeys("", doc, written)
		for _, k := range expect {
			covered[k] = true
			if !written[k] {
				t.Errorf("with every variable set (instances: %v), the role does not write %s:\n%s", withInstances, k, rendered)
			}
		}
	}
	for _, k := range keys {
		if !covered[k] {
			t.Errorf("key %s: no rendering sets it", k)
		}
	}
}

// TestRoleDefaultsAreRelayfws: relayfw.toml as the role writes it with its
// defaults means what no relayfw.toml at all means.
func TestRoleDefaultsAreRelayfws(t *testing.T) {
	rendered := renderRole(t, nil)[0]
	got, err := config.Parse("relayfw.toml", rendered)
	if err != nil {
		t.Fatalf("relayfw refuses what the role writes: %v\n%s", err, rendered)
	}
	none, err := config.Parse("empty.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(effective(t, none), effective(t, got), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("the role's defaults differ from relayfw's (-relayfw +role):\n%s\n%s", diff, rendered)
	}
}

// settings is a Config as relayfw acts on it: unset switches on, unset
// limits at their defaults.
type settings struct {
	Torrc, Backend, DataDirectory, TorPath, ResolverUser string
	StrictModes, TorVerify, DNS, DHCP, NTP, Ping, NDP    bool
	Updates                                              bool
	VerifyTimeout                                        string
	Resolvers                                            []string
	RejectsPerMinute                                     uint
	InboundEnabled, DirPorts, TrustRelays                bool
	Inbound                                              any
	Instances                                            []config.Instance
	Extra                                                []config.Extra
}

func effective(t *testing.T, c config.Config) settings {
	t.Helper()
	timeout, err := c.Tor.Timeout()
	if err != nil {
		t.Fatal(err)
	}
	inbound, err := c.Inbound.Settings()
	if err != nil {
		t.Fatal(err)
	}
	backend := c.Backend
	if backend == "" {
		backend = "auto"
	}
	return settings{
		Torrc: c.Torrc, Backend: backend, DataDirectory: c.DataDirectory, TorPath: c.Tor.Path, ResolverUser: c.Allow.ResolverUser,
		StrictModes: config.On(c.StrictModes), TorVerify: config.On(c.Tor.Verify),
		DNS: config.On(c.Allow.DNS), DHCP: config.On(c.Allow.DHCP), NTP: config.On(c.Allow.NTP), Ping: config.On(c.Allow.Ping), NDP: config.On(c.Allow.NDP),
		Updates: config.On(c.Allow.Updates), VerifyTimeout: timeout.String(), Resolvers: slices.Clone(c.Allow.Resolvers),
		RejectsPerMinute: c.Log.RejectsPerMinute,
		InboundEnabled:   c.Inbound.Enabled, DirPorts: c.Inbound.DirPorts, TrustRelays: c.Inbound.TrustRelays,
		Inbound: inbound, Instances: c.Instances, Extra: c.Allow.Extra,
	}
}
