--- A Prometheus endpoint: append this file's route to lua/routes.lua (or
-- copy routes.lua and this file into a --scripts folder and `dofile` it), then
-- `kill -HUP` the server. Prometheus scrapes GET /metrics (see
-- prometheus.yml beside this file).
--
-- It reads the live view only (no daemon call), so a scrape costs
-- microseconds whatever the number of containers.
local live = require "horcrux.live"
local json = require "horcrux.json"

local GAUGES = {
  { "cpu_usage_percent", "horcrux_container_cpu_percent", "CPU use, 100 = one core" },
  { "memory_usage_bytes", "horcrux_container_memory_usage_bytes", "Memory used (without inactive file pages)" },
  { "memory_limit_bytes", "horcrux_container_memory_limit_bytes", "Memory limit (host memory when unlimited)" },
  { "pids", "horcrux_container_pids", "Processes and threads" },
}
local COUNTERS = {
  { "cpu_usage_ns", "horcrux_container_cpu_seconds_total", "CPU time used", 1e-9 },
  { "network_rx_bytes", "horcrux_container_network_receive_bytes_total", "Bytes received" },
  { "network_tx_bytes", "horcrux_container_network_transmit_bytes_total", "Bytes sent" },
  { "block_read_bytes", "horcrux_container_block_read_bytes_total", "Bytes read from block devices" },
  { "block_write_bytes", "horcrux_container_block_write_bytes_total", "Bytes written to block devices" },
}

local function label(v)
  return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

route("GET", "/metrics", function(req)
  local records, err = live.all()
  if not records then
    return 503, "# no source could answer: " .. tostring(err) .. "\n"
  end
  local out = {}
  local function family(list, kind)
    for _, m in ipairs(list) do
      local field, name, help, scale = m[1], m[2], m[3], m[4] or 1
      out[#out + 1] = ("# HELP %s %s\n# TYPE %s %s\n"):format(name, help, name, kind)
      for _, r in ipairs(records) do
        local v = r[field]
        if type(v) == "number" then
          out[#out + 1] = ('%s{id="%s",name="%s",source="%s"} %.17g\n'):format(
            name, label(r.id:sub(1, 12)), label(r.name or ""), label(r.source), v * scale)
        end
      end
    end
  end
  family(GAUGES, "gauge")
  family(COUNTERS, "counter")
  return 200, table.concat(out),
    { ["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8" }
end)
