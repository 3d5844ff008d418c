package app

import (
	"context"
	"fmt"

	"github.com/trustflow/trustflow/internal/audit"
	"github.com/trustflow/trustflow/internal/config"
	"github.com/trustflow/trustflow/internal/custody"
	"github.com/trustflow/trustflow/internal/hsm"
	"github.com/trustflow/trustflow/internal/seal"
)

// kekSource builds the key-encryption key source that --kek names.
func kekSource(cfg config.Config, getenv func(string) string, tokens *hsm.Tokens) (seal.Source, error) {
	src, err := config.ParseKEKURI(cfg.KEK)
	if err != nil {
		return nil, err
	}
	switch src.Scheme {
	case "file":
		return seal.FileSource{Path: src.Path}, nil
	case "env":
		return seal.EnvSource{Name: src.Path, Getenv: getenv}, nil
	}
	u, err := hsm.ParseURI(src.Path)
	if err != nil {
		return nil, fmt.Errorf("--kek: %w", err)
	}
	return hsm.KEKSource{Tokens: tokens, URI: u}, nil
}

// rotateKEK is the API's `kek rotate`.
func (a *App) rotateKEK(ctx context.Context, actor audit.Actor, progress custody.Progress) (custody.Result, error) {
	res, err := a.Keys.Rotate(ctx, actor, progress)
	if err != nil {
		return custody.Result{}, fmt.Errorf("app: rotate kek: %w", err)
	}
	return res, nil
}
