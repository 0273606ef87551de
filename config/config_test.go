package config

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name     string
		text     string
		wantLine int // 0: no error
		wantMsg  string
	}{
		{"empty", "", 0, ""},
		{"full", "torrc = \"/etc/tor/torrc\"\n[allow]\ndns = true\ndhcp = false\nntp = true\nping = false\nresolvers = [\"192.0.2.53\", \"2001:db8::53\"]\n", 0, ""},
		{"unknown top-level key", "torrc = \"/x\"\nfirewall = \"nft\"\n", 2, `unknown key "firewall"`},
		{"backend ok", "backend = \"iptables\"\n[allow]\nresolver_user = \"unbound\"\nupdates = false\n", 0, ""},
		{"bad backend", "torrc = \"/x\"\nbackend = \"nft\"\n", 2, `backend "nft"`},
		{"unknown nested key", "[allow]\n\ndns = true\nsmtp = true\n", 4, `unknown key "allow.smtp"`},
		{"wrong type", "[allow]\ndns = \"yes\"\n", 2, ""},
		{"bad resolver", "[allow]\nresolvers = [\n  \"192.0.2.53\",\n  \"not-an-ip\",\n]\n", 4, `"not-an-ip" is not an IP address`},
		{"syntax", "[allow\n", 1, ""},
		{"extra ok", "[[allow.extra]]\nname = \"apt\"\nproto = \"tcp\"\nto = [\"deb.debian.org\", \"2001:db8::/32\"]\nports = [\"80\", \"443\", \"8000-8999\"]\nuser = \"_apt\"\n", 0, ""},
		{"extra bad port", "[[allow.extra]]\nname = \"x\"\nports = [\n \"80\",\n \"0-5\"]\n", 5, "port \"0-5\""},
		{"extra bad proto", "[[allow.extra]]\nname = \"x\"\nproto = \"icmp\"\n", 3, "proto \"icmp\""},
		{"extra bad prefix", "[[allow.extra]]\nname = \"x\"\nto = [\"10.0.0.0/33\"]\n", 3, "not a prefix"},
		{"extra no name", "[[allow.extra]]\nname = \"a\"\n\n[[allow.extra]]\nproto = \"tcp\"\n", 4, "name"},
		{"instances ok", "[[instance]]\nname = \"a\"\ntorrc = \"/etc/tor/instances/a/torrc\"\n\n[[instance]]\nname = \"b\"\ntorrc = \"/x/torrc\"\ndefaults_torrc = \"/x/defaults\"\n", 0, ""},
		{"instance without torrc", "[[instance]]\nname = \"a\"\ntorrc = \"/x\"\n\n[[instance]]\nname = \"b\"\n", 5, "torrc is required"},
		{"instance name twice", "[[instance]]\nname = \"a\"\ntorrc = \"/x\"\n[[instance]]\nname = \"a\"\ntorrc = \"/y\"\n", 4, "used twice"},
		{"instance bad name", "[[instance]]\nname = \"a b\"\ntorrc = \"/x\"\n", 1, "name \"a b\""},
		{"torrc and instances", "torrc = \"/etc/tor/torrc\"\n[[instance]]\nname = \"a\"\ntorrc = \"/x\"\n", 1, "torrc and [[instance]] together"},
		{"extra unknown key", "[[allow.extra]]\nname = \"x\"\nport = [\"80\"]\n", 3, `unknown key "allow.extra.port"`},
		{"inbound ok", "[inbound]\nenabled = true\ndir_ports = true\nper_minute = 20\nburst = 10\nper_hour = 100\nblock = \"30m\"\nmax_connections = 16\nipv4_prefix = 32\nipv6_prefix = 56\nset_size = 262144\ntrust_relays = true\ntrusted = [\"192.0.2.7\", \"2001:db8::/48\"]\n", 0, ""},
		{"inbound bad block", "torrc = \"/x\"\n[inbound]\nblock = \"1 day\"\n", 2, `block "1 day"`},
		{"inbound bad prefix", "[inbound]\nenabled = true\nipv6_prefix = 129\n", 1, "ipv6_prefix 129"},
		{"inbound bad trusted", "[inbound]\ntrusted = [\"example.org\"]\n", 1, `trusted "example.org"`},
		{"inbound trusts everyone", "[inbound]\ntrusted = [\"0.0.0.0/0\"]\n", 1, "trusts every source"},
		{"inbound unknown key", "[inbound]\nenable = true\n", 2, `unknown key "inbound.enable"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("relayfw.toml", []byte(tt.text))
			if tt.wantLine == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("want a SyntaxError, got %v", err)
			}
			if se.Line != tt.wantLine {
				t.Errorf("line %d, want %d (%v)", se.Line, tt.wantLine, err)
			}
			if tt.wantMsg != "" && !strings.Contains(se.Msg, tt.wantMsg) {
				t.Errorf("message %q does not contain %q", se.Msg, tt.wantMsg)
			}
		})
	}
}

func TestOn(t *testing.T) {
	f, tr := false, true
	if !On(nil) || !On(&tr) || On(&f) {
		t.Fatal("On: unset and true are on, false is off")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("[allow]\ndns = false\nresolvers = [\"192.0.2.1\"]\n")
	f.Add("torrc = 1\n")
	f.Add("[inbound]\nenabled = true\nblock = \"90s\"\nipv6_prefix = 48\ntrusted = [\"192.0.2.0/24\"]\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Parse("relayfw.toml", []byte(text))
		var se *SyntaxError
		if err != nil && !errors.As(err, &se) {
			t.Fatalf("error is not a SyntaxError: %v", err)
		}
		if err != nil {
			return
		}
		// What Parse accepts, the inbound settings accept too.
		if _, err := c.Inbound.Settings(); err != nil {
			t.Fatalf("accepted [inbound] the settings refuse: %v", err)
		}
	})
}

// TestExampleConfig: examples/relayfw.toml, the Debian package's
// conffile, sets nothing (every line is a comment showing a default or an
// example: the host's own tests prove it compiles to the ruleset of no
// relayfw.toml), and its examples, uncommented, parse. Its torrc line is
// the alternative to [[instance]] and stays commented.
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("../examples/relayfw.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("relayfw.toml", data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Config{}) {
		t.Fatalf("the shipped file sets %+v", c)
	}
	setting := regexp.MustCompile(`^# (\[.*\]|[a-z_0-9]+ = .*)$`)
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if setting.MatchString(l) && l != `# torrc = "/etc/tor/torrc"` {
			l = strings.TrimPrefix(l, "# ")
		}
		lines = append(lines, l)
	}
	c, err = Parse("uncommented relayfw.toml", []byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend != "auto" || len(c.Instances) != 1 || len(c.Allow.Extra) != 1 || c.Allow.ResolverUser == "" || len(c.Inbound.Trusted) == 0 || c.Inbound.Block == "" {
		t.Fatalf("uncommented, the examples set %+v", c)
	}
}
