package torconf

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLookupTorOption(t *testing.T) {
	tests := []struct {
		key      string
		wantName string // "" = unknown to tor
		wantKind optKind
		warns    int
	}{
		{"ExitPolicy", "ExitPolicy", optSettable, 0},
		{"EXITPOLICY", "ExitPolicy", optSettable, 0},
		{"ExitPol", "ExitPolicy", optSettable, 1}, // truncated: first match in strcasecmp order
		{"Exit", "ExitNodes", optSettable, 1},     // ExitNodes sorts before ExitPolicy
		{"exitpolicyreject", "ExitPolicyRejectLocalInterfaces", optSettable, 1},
		{"ExitPolcy", "", 0, 0}, // a typo is not a prefix
		{"FooBar", "", 0, 0},
		{"DirServer", "DirAuthority", optSettable, 0},             // silent alias
		{"ResolvConf", "ServerDNSResolvConfFile", optSettable, 1}, // alias with a warning
		{"RendNode", "", 0, 0},                                    // alias of a name tor dropped
		{"l", "LearnCircuitBuildTimeout", optSettable, 1},         // "l"→Log is command-line only
		{"HashedControlPassword", "HashedControlPassword", optSettable, 0},
		{"Group", "Group", optObsolete, 1},
		{"ORBindAddress", "ORListenAddress", optObsolete, 1}, // alias to an obsolete name
		{"ORPortLines", "ORPortLines", optVirtual, 0},
		{"__ORPort", "__ORPort", optSettable, 0},
		{"ClientAutoIPv6ORPort", "ClientAutoIPv6ORPort", optObsolete | optDeprecated, 1},
		{"HTTPProxy", "HTTPProxy", optSettable | optDeprecated, 1},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, ok := lookupTorOption(tt.key)
			if ok != (tt.wantName != "") || got.Name != tt.wantName || got.Kind != tt.wantKind || len(got.Warnings) != tt.warns {
				t.Errorf("lookupTorOption(%q) = %+v, %v; want %q kind %d with %d warnings", tt.key, got, ok, tt.wantName, tt.wantKind, tt.warns)
			}
		})
	}
}

// The table must be in tor's strcasecmp order, or truncated names would
// resolve to a different option than tor's.
func TestTorOptionTableOrder(t *testing.T) {
	for i := 1; i < len(torOptionTable); i++ {
		a, b := strings.ToLower(torOptionTable[i-1].name), strings.ToLower(torOptionTable[i].name)
		if a >= b {
			t.Fatalf("torOptionTable out of order or duplicated at %q, %q", torOptionTable[i-1].name, torOptionTable[i].name)
		}
	}
}

func TestOptionsRefuseWhatTorRefuses(t *testing.T) {
	tests := []struct {
		text    string
		line    int
		errText string
	}{
		{"ExitRelay 1\nExitPolcy accept *:22\n", 2, `unknown option "ExitPolcy"`},
		{"FooBar 1\n", 1, `unknown option "FooBar"`},
		{"ORPortLines 9001\n", 1, "virtual option"},
		{"ExitRelay 1\nExitRelay yes\n", 2, "allowed values are 0, 1 and auto"},
		{"IPv6Exit true\n", 1, "allowed values are 0 and 1"},
		{"OutboundBindAddressExit 203.0.113.300\n", 1, "not an IP address"},
	}
	for _, tt := range tests {
		lines, err := Parse(nil, "torrc", tt.text)
		if err != nil {
			t.Fatal(err)
		}
		_, err = OptionsFromLines(lines)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Line != tt.line || !strings.Contains(err.Error(), tt.errText) {
			t.Errorf("%q: err %v; want a SyntaxError at line %d containing %q", tt.text, err, tt.line, tt.errText)
		}
	}
}

func TestOptionsAbbreviationsAsTor(t *testing.T) {
	text := "ExitRel 1\nExitPol accept *:22\nDirServer auth1 orport=9001 127.0.0.1:7000 " + testFP + "\nGroup tor\n__ORPort 9001\n"
	lines, err := Parse(nil, "torrc", text)
	if err != nil {
		t.Fatal(err)
	}
	o, err := OptionsFromLines(lines)
	if err != nil {
		t.Fatal(err)
	}
	if o.ExitRelay != 1 || len(o.ExitPolicy) != 1 || o.ExitPolicy[0].Value != "accept *:22" {
		t.Errorf("ExitRelay %d, ExitPolicy %v: abbreviations not expanded as tor does", o.ExitRelay, o.ExitPolicy)
	}
	if diff := cmp.Diff([]string{"auth1 orport=9001 127.0.0.1:7000 " + testFP}, o.DirAuthority); diff != "" {
		t.Errorf("DirServer alias (-want +got):\n%s", diff)
	}
	if len(o.Ports) != 1 || o.Ports[0].Kind != "ORPort" {
		t.Errorf("__ORPort should add an ORPort: %+v", o.Ports)
	}
	if len(o.Warnings) != 3 { // two abbreviations, one obsolete option
		t.Errorf("warnings %q; want 3", o.Warnings)
	}
}

func TestTorrcRefusesBinary(t *testing.T) {
	_, err := Parse(nil, "torrc", "ExitRelay 1\nExitPolicy accept *:80\x00\x01\x02\n")
	var se *SyntaxError
	if !errors.As(err, &se) || se.Line != 2 {
		t.Fatalf("err %v; want a SyntaxError at line 2", err)
	}
}

// tor reads the defaults file, then the torrc: a list the torrc sets
// replaces the defaults' list, "+Option" appends to it, "/Option" clears it.
// optionsOf reads a defaults file's and a torrc's text as tor reads
// them together (OptionsFromGroups).
func optionsOf(t *testing.T, defaults, torrc string) Options {
	t.Helper()
	d, err := Parse(nil, "defaults", defaults)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Parse(nil, "torrc", torrc)
	if err != nil {
		t.Fatal(err)
	}
	o, err := OptionsFromGroups(d, l)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOptionsFromGroupsAsTor(t *testing.T) {
	defaults := "User debian-tor\nDataDirectory /var/lib/tor\nExitPolicy reject *:25\nSocksPort 9050\n"
	tests := []struct {
		torrc      string
		wantPolicy []string
		wantUser   string
	}{
		{"ExitPolicy accept *:80\nExitPolicy accept *:443\n", []string{"accept *:80", "accept *:443"}, "debian-tor"},
		{"+ExitPolicy accept *:80\n", []string{"reject *:25", "accept *:80"}, "debian-tor"},
		{"/ExitPolicy\nUser tor2\n", nil, "tor2"},
		{"Nickname x\n", []string{"reject *:25"}, "debian-tor"},
	}
	for _, tt := range tests {
		o := optionsOf(t, defaults, tt.torrc)
		var got []string
		for _, p := range o.ExitPolicy {
			got = append(got, p.Value)
		}
		if diff := cmp.Diff(tt.wantPolicy, got); diff != "" || o.User != tt.wantUser || o.DataDirectory != "/var/lib/tor" {
			t.Errorf("%q: policy (-want +got):\n%s\nUser %q (want %q), DataDirectory %q", tt.torrc, diff, o.User, tt.wantUser, o.DataDirectory)
		}
	}
}
