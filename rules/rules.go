// Package rules is a TEMPORARY facade: aliases of the names the rules
// package had before it was split into torconf (the torrc reader and tor's
// option table), exitpolicy (tor's exit-policy semantics) and ruleset (the
// backend contract and its compiler). It exists only so that callers keep
// compiling while they move to the new packages; write new code against
// those, and delete this package once nothing imports it.
//
// Each line maps one old name to its new home: rules.X = pkg.Y.
package rules

import (
	"github.com/relayfw/relayfw/exitpolicy"
	"github.com/relayfw/relayfw/internal/torcompat"
	"github.com/relayfw/relayfw/ruleset"
	"github.com/relayfw/relayfw/torconf"
)

// The torrc reader and tor's option table.
type (
	ConfigLine  = torconf.ConfigLine
	SyntaxError = torconf.SyntaxError
	FileError   = torconf.FileError
	FS          = torconf.FS
	OSFS        = torconf.OSFS
	Options     = torconf.Options
	PortConfig  = torconf.PortConfig
	DirServer   = torconf.DirServer
)

var (
	ReadTorrc             = torconf.Read
	ReadTorrcFS           = torconf.ReadFS
	ReadTorrcTemplateFS   = torconf.ReadTemplateFS
	ParseTorrc            = torconf.Parse
	DefaultOptions        = torconf.DefaultOptions
	OptionsFromLines      = torconf.OptionsFromLines
	OptionsFromGroups     = torconf.OptionsFromGroups
	ListenEndpoints       = torconf.ListenEndpoints
	TorOptionName         = torconf.OptionName
	ParseDirAuthorityLine = torconf.ParseDirAuthority
	ParseFallbackDirLine  = torconf.ParseFallbackDir
	TorAddrParse          = torcompat.AddrParse
)

// tor's exit-policy semantics.
type (
	Action     = exitpolicy.Action
	Entry      = exitpolicy.Entry
	ExitPolicy = exitpolicy.ExitPolicy
	Verdict    = exitpolicy.Verdict
	EntryError = exitpolicy.EntryError
	HostFacts  = exitpolicy.HostFacts
	Effective  = exitpolicy.Effective
)

const (
	Accept = exitpolicy.Accept
	Reject = exitpolicy.Reject
)

var (
	ErrMalformed    = exitpolicy.ErrMalformed
	ParseExitPolicy = exitpolicy.Parse
	EffectivePolicy = exitpolicy.FromOptions
	IsInternal      = exitpolicy.IsInternal
)

// The backend contract and its compiler.
type (
	Family        = ruleset.Family
	Rule          = ruleset.Rule
	Set           = ruleset.Set
	Ruleset       = ruleset.Ruleset
	Packet        = ruleset.Packet
	Host          = ruleset.Host
	UserRef       = ruleset.UserRef
	Allowance     = ruleset.Allowance
	Instance      = ruleset.Instance
	PortRange     = ruleset.PortRange
	Region        = ruleset.Region
	ExitMap       = ruleset.ExitMap
	PortClass     = ruleset.PortClass
	PrefixClass   = ruleset.PrefixClass
	ClassInterval = ruleset.ClassInterval
	Inbound       = ruleset.Inbound
	AddrRange     = ruleset.AddrRange
)

const (
	AnyFamily             = ruleset.AnyFamily
	IPv4                  = ruleset.IPv4
	IPv6                  = ruleset.IPv6
	ActionAccept          = ruleset.Accept
	ActionReject          = ruleset.Reject
	ActionLog             = ruleset.Log
	ClassEstablished      = ruleset.ClassEstablished
	ClassHostAllowance    = ruleset.ClassHostAllowance
	ClassRelayLink        = ruleset.ClassRelayLink
	ClassExit             = ruleset.ClassExit
	ClassRejectedPolicy   = ruleset.ClassRejectedPolicy
	ClassRejectedDefault  = ruleset.ClassRejectedDefault
	ClassLog              = ruleset.ClassLog
	RejectTCPReset        = ruleset.RejectTCPReset
	RejectAdminProhibited = ruleset.RejectAdminProhibited
	RulesetVersion        = ruleset.RulesetVersion
	NoClass               = ruleset.NoClass
	InboundPortsSet       = ruleset.InboundPortsSet
	InboundRuleJump       = ruleset.InboundRuleJump
	InboundRuleTrusted    = ruleset.InboundRuleTrusted
	InboundRuleBlocked    = ruleset.InboundRuleBlocked
	InboundRuleMinute     = ruleset.InboundRuleMinute
	InboundRuleHour       = ruleset.InboundRuleHour
	InboundRuleConns      = ruleset.InboundRuleConns
	InboundRuleLimited    = ruleset.InboundRuleLimited
)

var (
	Compile            = ruleset.Compile
	CompileInstances   = ruleset.CompileInstances
	DefaultHost        = ruleset.DefaultHost
	ExitInstances      = ruleset.ExitInstances
	ExitMapName        = ruleset.ExitMapName
	RelayLinkRuleName  = ruleset.RelayLinkRuleName
	FamilyOf           = ruleset.FamilyOf
	NewExitMap         = ruleset.NewExitMap
	IntervalAt         = ruleset.IntervalAt
	CheckRelayLink     = ruleset.CheckRelayLink
	DefaultInbound     = ruleset.DefaultInbound
	InboundSetName     = ruleset.InboundSetName
	InboundRuleName    = ruleset.InboundRuleName
	InboundCauses      = ruleset.InboundCauses
	NormalizeEndpoints = ruleset.NormalizeEndpoints
	ParsePrefixOrAddr  = ruleset.ParsePrefixOrAddr
	MergePrefixes      = ruleset.MergePrefixes
	Ranges             = ruleset.Ranges
	LastAddr           = ruleset.LastAddr
	Changes            = ruleset.Changes
	DiffRegions        = ruleset.DiffRegions
	ErrLinkZone        = ruleset.ErrLinkZone
	ErrLinkPort        = ruleset.ErrLinkPort
	ErrLinkInternal    = ruleset.ErrLinkInternal
	ErrLinkSpecial     = ruleset.ErrLinkSpecial
	ErrLinkIPv4InIPv6  = ruleset.ErrLinkIPv4InIPv6
	ErrLinkInvalid     = ruleset.ErrLinkInvalid
)
