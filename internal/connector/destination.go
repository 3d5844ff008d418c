package connector

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"

	"github.com/trustflow/trustflow/internal/store"
)

// destinationSettings are the settings that decide where a connector's
// secrets are sent and whom they are shown to: changing any of them moves
// the secrets, so an update that changes them must send the secrets again
// (or an admin must say --keep-secrets).
type destinationSettings struct {
	Scheme         string   `json:"scheme"`
	Host           string   `json:"host"`
	Port           string   `json:"port"`
	BasePath       string   `json:"base_path"`
	TokenURL       string   `json:"token_url,omitempty"`
	ServerName     string   `json:"server_name,omitempty"`
	CAs            []string `json:"cas"`
	Pins           string   `json:"pins"`
	SystemRoots    bool     `json:"system_roots"`
	AllowPlaintext bool     `json:"allow_plaintext"`
}

func destination(r store.Connector) destinationSettings {
	d := destinationSettings{ServerName: r.ServerName, CAs: slices.Sorted(slices.Values(r.CAs)), Pins: r.Pins,
		SystemRoots: r.SystemRoots, AllowPlaintext: r.AllowPlaintext}
	if d.CAs == nil {
		d.CAs = []string{}
	}
	if u, err := url.Parse(r.URL); err == nil {
		d.Scheme, d.Host, d.Port, d.BasePath = u.Scheme, strings.ToLower(u.Hostname()), u.Port(), strings.TrimRight(u.EscapedPath(), "/")
		if d.Port == "" {
			d.Port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
		}
	}
	var a AuthSettings
	if err := json.Unmarshal([]byte(r.Auth), &a); err == nil {
		d.TokenURL = a.TokenURL
	}
	return d
}

// changed names the settings that differ, as the API spells them.
func (d destinationSettings) changed(o destinationSettings) []string {
	var out []string
	add := func(cond bool, name string) {
		if cond {
			out = append(out, name)
		}
	}
	add(d.Scheme != o.Scheme, "the URL's scheme")
	add(d.Host != o.Host, "the URL's host")
	add(d.Port != o.Port, "the URL's port")
	add(d.BasePath != o.BasePath, "the URL's base path")
	add(d.TokenURL != o.TokenURL, "auth_settings.token_url")
	add(d.ServerName != o.ServerName, "server_name")
	add(!slices.Equal(d.CAs, o.CAs), "cas")
	add(d.Pins != o.Pins, "pins")
	add(d.SystemRoots != o.SystemRoots, "system_roots")
	add(d.AllowPlaintext != o.AllowPlaintext, "allow_plaintext")
	return out
}
