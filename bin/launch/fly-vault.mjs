#!/usr/bin/env node
// npm puts this on PATH (npx fly-vault); it only hands over to Deno.
import { launch } from "./launch.mjs";
launch("fly-vault.ts", { privateTrust: true });
