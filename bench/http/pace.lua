-- Paced load: every connection waits DELAY_MS (the script's argument) after each reply before
-- sending the next request, so C connections offer about C / (DELAY + latency) requests/s.
-- Prints the same JSON line as report.lua. wrk runs with this directory as its working one.
local pause = 0
init = function(args)
  pause = tonumber(args[1]) or 0
end
delay = function()
  return pause
end
dofile("report.lua")
