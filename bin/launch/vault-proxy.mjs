#!/usr/bin/env node
// npm puts this on PATH (npx vault-proxy); it only hands over to Deno.
import { launch } from "./launch.mjs";
launch("vault-proxy.ts");
