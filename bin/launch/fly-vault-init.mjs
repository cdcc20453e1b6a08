#!/usr/bin/env node
// npm puts this on PATH (npx fly-vault-init); it only hands over to Deno.
import { launch } from "./launch.mjs";
launch("fly-vault-init.ts");
